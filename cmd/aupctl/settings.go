package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

const globalHelp = `  --server URL        aupd admin API (env AUPCTL_SERVER, config server; default ` + defaultServer + `)
  --token TOKEN       bearer token (env AUPCTL_TOKEN; prefer a file: argv is visible to ps)
  --token-file FILE   read the token from FILE (env AUPCTL_TOKEN_FILE, config token_file)
  --config FILE       settings file (env AUPCTL_CONFIG; default ~/.config/aupctl/config.yml if present)
  -o, --output FORMAT table (default) or json: the server's JSON as it answered
  --json              the same as -o json
  --timeout D         request timeout (default 30s)
`

// globals are the global flags as parsed.
type globals struct {
	server, token, tokenFile, config *string
	output, outputLong               *string
	json                             *bool
	timeout                          *time.Duration
}

func addGlobalFlags(fs *flag.FlagSet) *globals {
	return &globals{
		server: fs.String("server", "", ""), token: fs.String("token", "", ""),
		tokenFile: fs.String("token-file", "", ""), config: fs.String("config", "", ""),
		output: fs.String("o", "", ""), outputLong: fs.String("output", "", ""),
		json: fs.Bool("json", false, ""), timeout: fs.Duration("timeout", 30*time.Second, ""),
	}
}

// format settles -o, --output and --json, then the config file's output:
// true for json.
func (g *globals) format(fileOutput string) (bool, error) {
	v := firstOf(*g.output, *g.outputLong)
	if *g.json {
		if v != "" && v != "json" {
			return false, &usageError{fmt.Sprintf("--json and -o %s disagree", v)}
		}
		v = "json"
	}
	switch firstOf(v, fileOutput, "table") {
	case "table":
		return false, nil
	case "json":
		return true, nil
	}
	return false, &usageError{fmt.Sprintf("output %q: use table or json", firstOf(v, fileOutput))}
}

// globalTakesValue reports whether a global flag takes the next argument
// as its value.
func globalTakesValue(arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	switch name {
	case "server", "token", "token-file", "config", "timeout", "o", "output":
		return true
	}
	return false
}

// settings is the aupctl config file: YAML, unknown keys are errors.
//
//	server: https://aupd.internal:9390
//	token_file: ~/.config/aupctl/token
//	output: json
type settings struct {
	Server    string        `yaml:"server"`
	Token     string        `yaml:"token"`
	TokenFile string        `yaml:"token_file"`
	Timeout   time.Duration `yaml:"timeout"`
	Output    string        `yaml:"output"` // table or json
}

// resolve settles the server, token and timeout: a flag, then the
// environment, then the config file, then the default. An offline command
// (hash-token, version, completion) talks to no server: it reads neither
// the config file nor the token file, which may not exist yet (hash-token
// makes the token that goes into it).
func (g *globals) resolve(fs *flag.FlagSet, x *cli, getenv func(string) string, offline bool) error {
	if offline {
		var err error
		x.json, err = g.format("")
		x.timeout = *g.timeout
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var cfg settings
	path := firstOf(*g.config, getenv("AUPCTL_CONFIG"))
	explicit := path != ""
	if path == "" {
		if dir, err := os.UserConfigDir(); err == nil {
			path = filepath.Join(dir, "aupctl", "config.yml")
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			dec := yaml.NewDecoder(strings.NewReader(string(b)))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil && err.Error() != "EOF" {
				return fmt.Errorf("config %s: %w", path, err)
			}
			if cfg.Token != "" {
				if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
					fmt.Fprintf(x.stderr, "aupctl: warning: %s holds a token and is readable by others (chmod 600 it)\n", path)
				}
			}
		case explicit || !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("config: %w", err)
		}
	}
	x.server = firstOf(*g.server, getenv("AUPCTL_SERVER"), cfg.Server, defaultServer)
	var err error
	if x.json, err = g.format(cfg.Output); err != nil {
		return err
	}
	x.timeout = *g.timeout
	if !set["timeout"] && cfg.Timeout > 0 {
		x.timeout = cfg.Timeout
	}
	tok, err := tokenFrom(*g.token, *g.tokenFile)
	if err == nil && tok == "" {
		tok, err = tokenFrom(getenv("AUPCTL_TOKEN"), getenv("AUPCTL_TOKEN_FILE"))
	}
	if err == nil && tok == "" {
		tok, err = tokenFrom(cfg.Token, expandHome(cfg.TokenFile))
	}
	x.token = tok
	return err
}

// tokenFrom returns a token given directly or read from a file.
func tokenFrom(token, file string) (string, error) {
	if token != "" {
		return token, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return tok, nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
