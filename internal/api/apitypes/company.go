package apitypes

// Company is the JSON form of a company. Durations are Go duration
// strings ("15m", "1h30m").
type Company struct {
	ID           string   `json:"id"`
	Name         string   `json:"name,omitempty"`
	Domains      []string `json:"domains"`
	AbuseContact string   `json:"abuse_contact,omitempty"`
	// DeskContacts may ask the abuse desk for a sign-in link for the
	// company, besides AbuseContact.
	DeskContacts []string `json:"desk_contacts,omitempty"`
	Threshold    *int     `json:"threshold,omitempty"`
	Allowlist    []string `json:"allowlist,omitempty"`
	Lockout      *Lockout `json:"lockout,omitempty"`
	// Volume, when set, replaces the provider's volume limits for the
	// company's accounts; an empty list sets none.
	Volume *[]VolumeLimit `json:"volume,omitempty"`
	// VolumeAllowlist holds accounts whose volume crossings are reported,
	// never throttled or suspended.
	VolumeAllowlist []string `json:"volume_allowlist,omitempty"`
	// Source is "config" (read-only here) or "api".
	Source string `json:"source,omitempty"`
}

// Lockout is a company's failed-login lockout override.
type Lockout struct {
	MaxFailures int    `json:"max_failures,omitempty"`
	Window      string `json:"window,omitempty"`
	Duration    string `json:"duration,omitempty"`
}

// VolumeLimit is one limit on what an account sends: more than Messages
// messages, or more than Recipients recipients (exactly one is set),
// within Window crosses it, and Action (throttle or suspend) follows.
type VolumeLimit struct {
	Name       string `json:"name"`
	Window     string `json:"window"`
	Messages   int    `json:"messages,omitempty"`
	Recipients int    `json:"recipients,omitempty"`
	Action     string `json:"action"`
}

// CompanyRequest creates or replaces an API-managed company. ID may be
// left out; if given it must match the path.
type CompanyRequest struct {
	Company
	Reason string `json:"reason"`
}

// CompanyList is a page of companies, by id.
type CompanyList struct {
	Companies []*Company `json:"companies"`
	// NextCursor fetches the next page; absent at the end.
	NextCursor string `json:"next_cursor,omitempty"`
}
