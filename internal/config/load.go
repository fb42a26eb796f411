package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvRedisAutostart asks aupd to start a local redis-server under data_dir
// when nothing answers on the default address ("1" or "true"). It is what
// scripts/run sets; production configs leave it unset.
const EnvRedisAutostart = "AUPD_REDIS_AUTOSTART"

// FileSuffix turns an environment override into one that names a file
// holding the value (AUPD_REDIS_PASSWORD_FILE=/run/secrets/redis), as
// container platforms mount secrets. One trailing newline is dropped.
const FileSuffix = "_FILE"

// document is the parsed YAML file: which keys it sets, and on which line.
type document struct{ root *yaml.Node }

func parseDocument(data []byte) (*document, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, err
	}
	return &document{root: &n}, nil
}

// node returns the node at a dotted key path ("aup.threshold",
// "auth.tokens[0].hash"), or the deepest node found on the way and false.
func (d *document) node(path string) (*yaml.Node, bool) {
	if d == nil || d.root == nil || len(d.root.Content) == 0 {
		return nil, false
	}
	n := d.root.Content[0]
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i > 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := mappingValue(n, name)
		if next == nil {
			return n, false
		}
		n = next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return n, false
			}
			n = n.Content[idx]
		}
	}
	return n, true
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}

// has reports whether the file sets a key.
func (d *document) has(path string) bool {
	_, ok := d.node(path)
	return ok
}

// keyPattern matches the key path that starts a validation message.
var keyPattern = regexp.MustCompile(`^([a-z_]+(?:\[[0-9]+\])?)((?:[.][a-z_]+(?:\[[0-9]+\])?)*)(?::| \()`)

// locate prefixes each validation error with the line of the key it
// names, when the file sets that key (or its nearest parent).
func (d *document) locate(err error) error {
	if d == nil || err == nil {
		return err
	}
	var out []error
	for _, e := range flatten(err) {
		msg := e.Error()
		if m := keyPattern.FindStringSubmatch(msg); m != nil {
			path := m[1] + m[2]
			// "notifier: smtp.host: ..." names notifier.smtp.host.
			if rest, ok := strings.CutPrefix(msg, path+": "); ok {
				if m2 := keyPattern.FindStringSubmatch(rest); m2 != nil {
					if _, ok := d.node(path + "." + m2[1] + m2[2]); ok {
						path += "." + m2[1] + m2[2]
					}
				}
			}
			if n, _ := d.node(path); n != nil && n.Line > 0 {
				out = append(out, fmt.Errorf("line %d: %w", n.Line, e))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// flatten returns the errors of a tree of errors.Join, leaves only.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// prefixed prefixes every error of a joined error with name, so that each
// line of the report names its key.
func prefixed(name string, err error) []error {
	var out []error
	for _, e := range flatten(err) {
		out = append(out, fmt.Errorf("%s: %w", name, e))
	}
	return out
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	wholeNumber  = regexp.MustCompile(`^[-+]?[0-9]+$`)
)

// checkNumbers refuses what YAML would silently truncate or reinterpret
// for an integer setting: 10.5, 1e1, 0x10, 1_000. Durations are written
// with units ("30s") and are checked by their own parser.
func checkNumbers(n *yaml.Node, t reflect.Type, path string) []error {
	if n == nil {
		return nil
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return checkNumbers(n.Content[0], t, path)
	case yaml.AliasNode:
		return checkNumbers(n.Alias, t, path)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return nil
	}
	join := func(p, k string) string {
		if p == "" {
			return k
		}
		return p + "." + k
	}
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		fields := map[string]reflect.Type{}
		var inline []reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") {
				inline = append(inline, f.Type)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
		for _, it := range inline {
			errs = append(errs, checkNumbers(n, it, path)...)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if ft, ok := fields[n.Content[i].Value]; ok {
				errs = append(errs, checkNumbers(n.Content[i+1], ft, join(path, n.Content[i].Value))...)
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				errs = append(errs, checkNumbers(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				errs = append(errs, checkNumbers(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
			}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind == yaml.ScalarNode && (n.Tag != "!!int" || !wholeNumber.MatchString(n.Value)) {
			errs = append(errs, fmt.Errorf("line %d: %s: %q is not a whole number", n.Line, path, n.Value))
		}
	}
	return errs
}

// decodeFile decodes a config document strictly over cfg: unknown keys,
// and numbers that an integer setting cannot hold exactly, are errors.
func decodeFile(data []byte, cfg *Config) (*document, error) {
	if err := decode(bytes.NewReader(data), cfg); err != nil {
		return nil, err
	}
	doc, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	if errs := checkNumbers(doc.root, reflect.TypeFor[Config](), ""); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return doc, nil
}

// settle applies what depends on which keys the file sets: the notice
// transport, the Redis autostart rule and relative paths. dir is the
// config file's directory ("" for none). It returns the problems found.
func (c *Config) settle(doc *document, dir string, getenv func(string) string) []error {
	var errs []error
	// Notices: a file that configures SMTP sends by SMTP; the .eml
	// default is only for a config that configures no transport.
	emlSet, smtpSet := doc.has("notifier.eml_dir"), doc.has("notifier.smtp")
	switch {
	case smtpSet && emlSet && c.Notifier.EMLDir != "":
		errs = append(errs, errors.New("notifier.eml_dir: set together with notifier.smtp; choose one transport (eml_dir: \"\" sends by SMTP)"))
	case smtpSet && !emlSet:
		c.Notifier.EMLDir = ""
	}
	// Relative paths in the file are relative to the file.
	if dir != "" {
		for _, p := range c.paths() {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
	if err := c.applyEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if !emlSet && !smtpSet {
		c.Notifier.EMLDir = filepath.Join(c.DataDir, "notices")
	}
	// Redis: a local redis-server only when asked for, and never instead
	// of a configured server.
	if v := getenv(EnvRedisAutostart); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not true or false", EnvRedisAutostart, v))
		}
		c.Redis.Autostart = c.Redis.Autostart || on
	}
	if c.Redis.Autostart && (doc.has("redis.addrs") || doc.has("redis.master_name") || getenv(EnvRedisAddrs) != "") {
		errs = append(errs, fmt.Errorf("redis.autostart: aupd starts a local redis-server only when no Redis address is configured (redis.addrs, redis.master_name or %s)", EnvRedisAddrs))
	}
	return errs
}

// paths returns the settings that name files or directories.
func (c *Config) paths() []*string {
	return []*string{
		&c.DataDir, &c.NATS.CredsFile, &c.NATS.Embedded.StoreDir,
		&c.NATS.TLS.CAFile, &c.NATS.TLS.CertFile, &c.NATS.TLS.KeyFile,
		&c.Redis.TLS.CAFile, &c.Redis.TLS.CertFile, &c.Redis.TLS.KeyFile,
		&c.Notifier.EMLDir, &c.Notifier.Templates.Subject, &c.Notifier.Templates.Body,
		&c.Policy.Postfix.UnixSocket,
	}
}

// envValue reads an override: NAME, or the file NAME_FILE names. Setting
// both is an error.
func envValue(get func(string) string, name string) (string, error) {
	v, file := get(name), get(name+FileSuffix)
	if file == "" {
		return v, nil
	}
	if v != "" {
		return "", fmt.Errorf("%s and %s%s are both set; set one", name, name, FileSuffix)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s%s: %w", name, FileSuffix, err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// RedactURL hides the password (or token) of every URL in a
// comma-separated list of NATS URLs: nats://user:pass@host becomes
// nats://user:xxxxx@host, nats://token@host becomes nats://xxxxx@host.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if at := strings.LastIndexByte(p, '@'); at >= 0 {
				if sch := strings.Index(p, "://"); sch >= 0 && sch+3 <= at {
					parts[i] = p[:sch+3] + "xxxxx" + p[at:]
				} else {
					parts[i] = "xxxxx" + p[at:]
				}
			}
			continue
		}
		if _, ok := u.User.Password(); ok {
			parts[i] = u.Redacted()
		} else {
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// RedactError returns err with every NATS URL credential of urls removed
// from its message (client errors may echo the URL).
func RedactError(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		if p != "" {
			clean = strings.ReplaceAll(clean, p, RedactURL(p))
		}
		if u, perr := url.Parse(p); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				clean = strings.ReplaceAll(clean, pw, "xxxxx")
			} else if name := u.User.Username(); name != "" && !ok {
				clean = strings.ReplaceAll(clean, name, "xxxxx")
			}
		}
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}
