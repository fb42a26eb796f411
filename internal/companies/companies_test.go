package companies

import (
	"slices"
	"strings"
	"testing"
)

// TestDeskContacts: desk_contacts are checked, put in lower case and
// de-duplicated; MaySignIn and SignInCompanies answer for the abuse
// contact and the listed addresses only.
func TestDeskContacts(t *testing.T) {
	c := Company{ID: "acme", Domains: []string{"acme.test"}, AbuseContact: "Abuse@Elsewhere.test",
		DeskContacts: []string{"Alice@Acme.test", " bob@acme.test", "alice@acme.test"}}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.DeskContacts, []string{"alice@acme.test", "bob@acme.test"}) {
		t.Errorf("desk_contacts %q", c.DeskContacts)
	}
	for addr, want := range map[string]bool{
		"abuse@elsewhere.test": true, "alice@acme.test": true, "bob@acme.test": true,
		"Alice@Acme.test": false, // callers normalize first
		"carol@acme.test": false, "": false,
	} {
		if got := c.MaySignIn(addr); got != want {
			t.Errorf("MaySignIn(%q) = %v", addr, got)
		}
	}
	for _, bad := range [][]string{{"not an address"}, {"alice@"}, slices.Repeat([]string{"x@acme.test"}, MaxDeskContacts+1)} {
		c := Company{ID: "acme", Domains: []string{"acme.test"}, DeskContacts: bad}
		if err := c.Normalize(); err == nil || !strings.Contains(err.Error(), "desk_contacts") {
			t.Errorf("desk_contacts %q: %v", bad[0], err)
		}
	}

	d, err := New(nil, "t", []Company{
		{ID: "acme", Domains: []string{"acme.test"}, AbuseContact: "shared@provider.test", DeskContacts: []string{"alice@acme.test"}},
		{ID: "globex", Domains: []string{"globex.test"}, AbuseContact: "abuse@globex.test", DeskContacts: []string{"shared@provider.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(cs []Company) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	for addr, want := range map[string][]string{
		"shared@provider.test": {"acme", "globex"},
		"alice@acme.test":      {"acme"},
		"abuse@globex.test":    {"globex"},
		"nobody@acme.test":     nil,
	} {
		if got := ids(d.SignInCompanies(addr)); !slices.Equal(got, want) {
			t.Errorf("SignInCompanies(%s) = %v, want %v", addr, got, want)
		}
	}
}
