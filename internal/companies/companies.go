// Package companies is the directory of the provider's companies
// (tenants): which company owns a mail domain, its abuse contact and its
// overrides of the provider's defaults. Companies come from the config
// file (read-only at run time, replaced on reload) and from the admin API
// (stored in Redis, shared by every aupd process).
package companies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Company is one tenant.
type Company struct {
	ID           string   `yaml:"id" json:"id"`
	Name         string   `yaml:"name" json:"name,omitempty"`
	Domains      []string `yaml:"domains" json:"domains"`
	AbuseContact string   `yaml:"abuse_contact" json:"abuse_contact,omitempty"`
	// DeskContacts are more addresses that may ask the abuse desk for a
	// sign-in link for this company, besides AbuseContact (the company's
	// abuse team by name).
	DeskContacts []string `yaml:"desk_contacts" json:"desk_contacts,omitempty"`
	// Threshold overrides the provider's AUP threshold when set.
	Threshold *int `yaml:"threshold" json:"threshold,omitempty"`
	// SpamRate overrides the provider's spam-rate rule (aup.spam_rate)
	// when set; rate 0 turns it off for the company.
	SpamRate *rules.SpamRateSetting `yaml:"spam_rate" json:"spam_rate,omitempty"`
	// Allowlist holds accounts never suspended automatically.
	Allowlist []string `yaml:"allowlist" json:"allowlist,omitempty"`
	// Lockout overrides the provider's failed-login lockout policy.
	Lockout *Lockout `yaml:"lockout" json:"lockout,omitempty"`
	// Volume, when set, replaces the provider's volume limits (aup.volume)
	// for the company's accounts; an empty list sets none.
	Volume *[]rules.VolumeLimit `yaml:"volume" json:"volume,omitempty"`
	// VolumeAllowlist holds accounts whose volume crossings are reported,
	// never throttled or suspended.
	VolumeAllowlist []string `yaml:"volume_allowlist" json:"volume_allowlist,omitempty"`
	// Source is "config" or "api"; it is set by the directory.
	Source string `yaml:"-" json:"source,omitempty"`
}

// Lockout is a company's failed-login lockout policy override.
type Lockout struct {
	MaxFailures int           `yaml:"max_failures" json:"max_failures,omitempty"`
	Window      time.Duration `yaml:"window" json:"window,omitempty"`
	Duration    time.Duration `yaml:"duration" json:"duration,omitempty"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Normalize checks a company and puts its domains and addresses in lower
// case.
func (c *Company) Normalize() error {
	if !idPattern.MatchString(c.ID) {
		return fmt.Errorf("company id %q: use 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit", c.ID)
	}
	if len(c.Name) > 200 {
		return fmt.Errorf("company %s: name is longer than 200 characters", c.ID)
	}
	if len(c.Domains) == 0 {
		return fmt.Errorf("company %s: no domains", c.ID)
	}
	for i, d := range c.Domains {
		n, err := events.NormalizeDomain(d)
		if err != nil {
			return fmt.Errorf("company %s: %w", c.ID, err)
		}
		c.Domains[i] = n
	}
	if c.AbuseContact != "" {
		a, err := events.NormalizeAccount(c.AbuseContact)
		if err != nil {
			return fmt.Errorf("company %s: abuse_contact: %w", c.ID, err)
		}
		c.AbuseContact = a
	}
	if len(c.DeskContacts) > MaxDeskContacts {
		return fmt.Errorf("company %s: desk_contacts: %d addresses, at most %d", c.ID, len(c.DeskContacts), MaxDeskContacts)
	}
	seen := map[string]bool{}
	contacts := c.DeskContacts[:0:0]
	for _, a := range c.DeskContacts {
		n, err := events.NormalizeAccount(strings.TrimSpace(a))
		if err != nil {
			return fmt.Errorf("company %s: desk_contacts: %q: %w", c.ID, a, err)
		}
		if !seen[n] {
			seen[n] = true
			contacts = append(contacts, n)
		}
	}
	if c.DeskContacts != nil {
		c.DeskContacts = contacts
	}
	if c.Threshold != nil && *c.Threshold < 1 {
		return fmt.Errorf("company %s: threshold %d: must be at least 1 (a count exceeding it suspends)", c.ID, *c.Threshold)
	}
	if c.SpamRate != nil {
		if err := c.SpamRate.Validate(); err != nil {
			return fmt.Errorf("company %s: spam_rate: %w", c.ID, err)
		}
	}
	for i, a := range c.Allowlist {
		n, err := events.NormalizeAccount(a)
		if err != nil {
			return fmt.Errorf("company %s: allowlist: %w", c.ID, err)
		}
		c.Allowlist[i] = n
	}
	if c.Volume != nil {
		if err := rules.ValidateVolume(*c.Volume); err != nil {
			return fmt.Errorf("company %s: volume%w", c.ID, err)
		}
	}
	for i, a := range c.VolumeAllowlist {
		n, err := events.NormalizeAccount(a)
		if err != nil {
			return fmt.Errorf("company %s: volume_allowlist: %w", c.ID, err)
		}
		c.VolumeAllowlist[i] = n
	}
	if l := c.Lockout; l != nil && (l.MaxFailures < 0 || l.Window < 0 || l.Duration < 0) {
		return fmt.Errorf("company %s: lockout values must not be negative", c.ID)
	}
	return nil
}

// MaxDeskContacts is the most desk_contacts a company may list.
const MaxDeskContacts = 100

// MaySignIn reports whether addr (lower case) may ask the abuse desk for
// a sign-in link for this company: it is the company's abuse contact or
// one of its desk contacts.
func (c *Company) MaySignIn(addr string) bool {
	return addr != "" && (addr == c.AbuseContact || slices.Contains(c.DeskContacts, addr))
}

// SignInCompanies returns the companies for which addr (lower case) may
// ask the abuse desk for a sign-in link, sorted by id.
func (d *Directory) SignInCompanies(addr string) []Company {
	var out []Company
	for _, c := range d.All() {
		if c.MaySignIn(addr) {
			out = append(out, c)
		}
	}
	return out
}

// Allowlisted reports whether account is on the company's allowlist.
func (c *Company) Allowlisted(account string) bool { return slices.Contains(c.Allowlist, account) }

// VolumeAllowlisted reports whether account is on the company's volume
// allowlist.
func (c *Company) VolumeAllowlisted(account string) bool {
	return slices.Contains(c.VolumeAllowlist, account)
}

// snapshot is an immutable view of every company.
type snapshot struct {
	byID     map[string]*Company
	byDomain map[string]*Company
}

func build(static, dynamic []Company) (*snapshot, error) {
	s := &snapshot{byID: map[string]*Company{}, byDomain: map[string]*Company{}}
	add := func(c Company, source string) error {
		c.Source = source
		if _, dup := s.byID[c.ID]; dup {
			if source == "api" {
				return nil // the config file wins over an older API entry
			}
			return fmt.Errorf("company %s is defined twice", c.ID)
		}
		for _, d := range c.Domains {
			if other, taken := s.byDomain[d]; taken {
				if source == "api" {
					return nil
				}
				return fmt.Errorf("domain %s belongs to both %s and %s", d, other.ID, c.ID)
			}
		}
		cp := c
		s.byID[c.ID] = &cp
		for _, d := range c.Domains {
			s.byDomain[d] = &cp
		}
		return nil
	}
	for _, c := range static {
		if err := add(c, "config"); err != nil {
			return nil, err
		}
	}
	for _, c := range dynamic {
		if err := add(c, "api"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Directory answers which company owns a domain. Lookups read an
// immutable snapshot and take no lock on the hot path.
type Directory struct {
	rdb    Redis
	key    string // HASH id -> JSON of API-managed companies
	verKey string // counter bumped on every API change
	mu     sync.Mutex
	static []Company
	ver    int64
	cur    atomicSnapshot
}

// Redis is what the directory needs from a client.
type Redis interface {
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	HGet(ctx context.Context, key, field string) *redis.StringCmd
	Get(ctx context.Context, key string) *redis.StringCmd
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// New returns a directory of the static companies; rdb may be nil (no
// API-managed companies). The prefix is the store's key prefix; the
// directory's keys are <prefix>:companies and <prefix>:companies:ver
// (hash-tagged together so that a change is one transaction on Cluster).
func New(rdb Redis, prefix string, static []Company) (*Directory, error) {
	d := &Directory{rdb: rdb, key: prefix + ":{companies}", verKey: prefix + ":{companies}:ver"}
	if err := d.SetStatic(static); err != nil {
		return nil, err
	}
	return d, nil
}

// SetStatic replaces the companies of the config file (on reload).
func (d *Directory) SetStatic(static []Company) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := slices.Clone(static)
	for i := range cs {
		if err := cs[i].Normalize(); err != nil {
			return err
		}
	}
	var dyn []Company
	if cur := d.cur.Load(); cur != nil {
		for _, c := range cur.byID {
			if c.Source == "api" {
				dyn = append(dyn, *c)
			}
		}
	}
	snap, err := build(cs, dyn)
	if err != nil {
		return err
	}
	d.static = cs
	d.cur.Store(snap)
	return nil
}

// ByDomain returns the company that owns domain (lower case).
func (d *Directory) ByDomain(domain string) (*Company, bool) {
	c, ok := d.cur.Load().byDomain[domain]
	return c, ok
}

// ByAccount returns the company that owns an account's domain.
func (d *Directory) ByAccount(account string) (*Company, bool) {
	at := strings.LastIndexByte(account, '@')
	if at < 0 {
		return nil, false
	}
	return d.ByDomain(account[at+1:])
}

// ByID returns a company by id.
func (d *Directory) ByID(id string) (*Company, bool) {
	c, ok := d.cur.Load().byID[id]
	return c, ok
}

// All returns every company, sorted by id.
func (d *Directory) All() []Company {
	snap := d.cur.Load()
	out := make([]Company, 0, len(snap.byID))
	for _, id := range slices.Sorted(maps.Keys(snap.byID)) {
		out = append(out, *snap.byID[id])
	}
	return out
}

// Errors of Put and Delete.
var (
	ErrStatic   = errors.New("company is defined in the config file; change it there")
	ErrNotFound = errors.New("no such company")
	ErrConflict = errors.New("conflict")
)

// Refresh reloads the API-managed companies from Redis if they changed.
// Run it periodically; Put and Delete refresh this process at once.
func (d *Directory) Refresh(ctx context.Context) error {
	if d.rdb == nil {
		return nil
	}
	ver, err := d.rdb.Get(ctx, d.verKey).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read companies version: %w", err)
	}
	d.mu.Lock()
	same := ver == d.ver && d.cur.Load() != nil
	d.mu.Unlock()
	if same {
		return nil
	}
	raw, err := d.rdb.HGetAll(ctx, d.key).Result()
	if err != nil {
		return fmt.Errorf("read companies: %w", err)
	}
	var dyn []Company
	for _, id := range slices.Sorted(maps.Keys(raw)) {
		var c Company
		if err := json.Unmarshal([]byte(raw[id]), &c); err != nil {
			return fmt.Errorf("decode company %s: %w", id, err)
		}
		dyn = append(dyn, c)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, err := build(d.static, dyn)
	if err != nil {
		return err
	}
	d.ver = ver
	d.cur.Store(snap)
	return nil
}

// Put creates or replaces an API-managed company.
func (d *Directory) Put(ctx context.Context, c Company) error {
	if err := c.Normalize(); err != nil {
		return err
	}
	if cur, ok := d.ByID(c.ID); ok && cur.Source == "config" {
		return ErrStatic
	}
	for _, dom := range c.Domains {
		if other, ok := d.ByDomain(dom); ok && other.ID != c.ID {
			return fmt.Errorf("%w: domain %s belongs to company %s", ErrConflict, dom, other.ID)
		}
	}
	c.Source = ""
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode company: %w", err)
	}
	if err := d.write(ctx, func(p redis.Pipeliner) { p.HSet(ctx, d.key, c.ID, b) }); err != nil {
		return err
	}
	return d.Refresh(ctx)
}

// Delete removes an API-managed company.
func (d *Directory) Delete(ctx context.Context, id string) error {
	cur, ok := d.ByID(id)
	if !ok {
		return ErrNotFound
	}
	if cur.Source == "config" {
		return ErrStatic
	}
	if err := d.write(ctx, func(p redis.Pipeliner) { p.HDel(ctx, d.key, id) }); err != nil {
		return err
	}
	return d.Refresh(ctx)
}

func (d *Directory) write(ctx context.Context, fn func(redis.Pipeliner)) error {
	if d.rdb == nil {
		return errors.New("companies: no Redis configured")
	}
	_, err := d.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fn(p)
		p.Incr(ctx, d.verKey)
		return nil
	})
	if err != nil {
		return fmt.Errorf("write company: %w", err)
	}
	return nil
}

// Policy is the policy of account, of company c (nil: no company's): the
// provider's rule p with c's overrides, the threshold and the allowlist.
func Policy(p rules.Provider, c *Company, account string) rules.Policy {
	if c == nil {
		return p.For(account, rules.CompanyRule{})
	}
	r := rules.CompanyRule{Threshold: c.Threshold, Allowlisted: c.Allowlisted(account)}
	if c.SpamRate != nil {
		rate := c.SpamRate.Rule()
		r.SpamRate = &rate
	}
	return p.For(account, r)
}

// VolumePolicy is the volume rule for an account of company c (nil: an
// account outside every company): the provider's limits, or the
// company's when it sets its own.
func VolumePolicy(p rules.Provider, c *Company, account string) rules.VolumePolicy {
	if c == nil {
		return p.VolumeFor(account, nil, false)
	}
	return p.VolumeFor(account, c.Volume, c.VolumeAllowlisted(account))
}
