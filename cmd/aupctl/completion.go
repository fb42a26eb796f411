package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
)

// completionCmd prints a completion script for a shell, made from the
// command table: the commands, and each command's flags.
func completionCmd(_ context.Context, x *cli, args []string, _ *flags) error {
	table := commandTable()
	names := sortedNames(table)
	flagsOf := func(name string) []string {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		table[name].flags(fs)
		var out []string
		fs.VisitAll(func(f *flag.Flag) { out = append(out, "--"+f.Name) })
		return out
	}
	globalFlags := []string{"--server", "--token", "--token-file", "--config", "--output", "--json", "--timeout", "--help"}
	switch args[0] {
	case "bash":
		var cases strings.Builder
		for _, n := range names {
			fmt.Fprintf(&cases, "    %s) opts=%q ;;\n", n, strings.Join(flagsOf(n), " "))
		}
		fmt.Fprintf(x.stdout, `# bash completion for aupctl: source <(aupctl completion bash)
_aupctl() {
  local cur cmd opts i
  cur="${COMP_WORDS[COMP_CWORD]}"
  cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${COMP_WORDS[i]}" in
      --server|--token|--token-file|--config|--timeout|--output|-o) ((i++)) ;;
      -*) ;;
      *) cmd="${COMP_WORDS[i]}"; break ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "%s help %s" -- "$cur"))
    return
  fi
  opts=""
  case "$cmd" in
%s  esac
  if [[ "$cmd" == completion ]]; then opts="bash zsh fish"; fi
  COMPREPLY=($(compgen -W "$opts %s" -- "$cur"))
}
complete -o default -F _aupctl aupctl
`, strings.Join(names, " "), strings.Join(globalFlags, " "), cases.String(), strings.Join(globalFlags, " "))
	case "zsh":
		var cmds strings.Builder
		for _, n := range names {
			fmt.Fprintf(&cmds, "    '%s:%s'\n", n, strings.ReplaceAll(table[n].summary, "'", ""))
		}
		var cases strings.Builder
		for _, n := range names {
			fmt.Fprintf(&cases, "    %s) _values 'flag' %s ;;\n", n, quoteAll(append(flagsOf(n), globalFlags...)))
		}
		fmt.Fprintf(x.stdout, `#compdef aupctl
# zsh completion for aupctl: aupctl completion zsh > "${fpath[1]}/_aupctl"
_aupctl() {
  local -a commands
  commands=(
%s  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case "${words[2]}" in
%s  esac
}
compdef _aupctl aupctl
`, cmds.String(), cases.String())
	case "fish":
		fmt.Fprintln(x.stdout, "# fish completion for aupctl: aupctl completion fish > ~/.config/fish/completions/aupctl.fish")
		for _, n := range names {
			fmt.Fprintf(x.stdout, "complete -c aupctl -n '__fish_use_subcommand' -f -a %s -d %s\n", n, quote(table[n].summary))
			for _, fl := range flagsOf(n) {
				fmt.Fprintf(x.stdout, "complete -c aupctl -n '__fish_seen_subcommand_from %s' -l %s\n", n, strings.TrimPrefix(fl, "--"))
			}
		}
		for _, fl := range globalFlags {
			fmt.Fprintf(x.stdout, "complete -c aupctl -l %s\n", strings.TrimPrefix(fl, "--"))
		}
	default:
		return &usageError{fmt.Sprintf("unknown shell %q: use bash, zsh or fish", args[0])}
	}
	return nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return strings.Join(q, " ")
}
