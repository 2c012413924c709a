#!/usr/bin/env bash
# test_manpage.sh — cxr-triage(8) (docs/cxr-triage.8) documents the command as
# built: every subcommand of cli/main.c has its section, every long option of
# every subcommand's getopt table (cli/cmd_<name>.c) and of its --help text is
# in that section, the exit statuses of cli/cli.h are listed, and man renders
# the page without a warning.
. "$(dirname "$0")/cli_lib.sh"

page="$CXR_SOURCE_DIR/docs/cxr-triage.8"
[ -f "$page" ] || fail "no man page at $page"

# The section of subcommand $1: from ".SS name" to the next .SS or .SH.
section() { awk -v s=".SS $1" '$0 == s { on = 1; next } on && /^\.S[SH] / { exit } on' "$page"; }
# Long options as the page writes them (\-\-name), unescaped.
page_options() { grep -o '\\-\\-[a-z0-9\\-]*' | sed 's/\\//g' | sort -u; }

subcommands=$(sed -n 's/^ *{"\([a-z]*\)", cmd_[a-z]*,.*/\1/p' "$CXR_SOURCE_DIR/cli/main.c")
[ "$(echo "$subcommands" | wc -w)" -ge 8 ] || fail "could not read the subcommand table of cli/main.c: $subcommands"
checked=0
for sub in $subcommands; do
    sec=$(section "$sub")
    [ -n "$sec" ] || fail "the man page has no section '.SS $sub'"
    documented=$(printf '%s\n' "$sec" | page_options)
    wanted=""
    src="$CXR_SOURCE_DIR/cli/cmd_$sub.c"
    if [ -f "$src" ]; then
        # The getopt_long table(s): {"name", ...}
        wanted=$(awk '/struct option/,/\{0, 0, 0, 0\}|\{NULL, 0, NULL, 0\}/' "$src" |
                 grep -o '{"[a-z0-9-]*"' | tr -d '{"' | sed 's/^/--/')
    fi
    # What --help prints (some subcommands take options outside a table).
    help=$("$CXR_BIN" "$sub" --help 2>&1) || true
    wanted=$(printf '%s\n%s\n' "$wanted" "$(printf '%s\n' "$help" | grep -o -- '--[a-z0-9][a-z0-9-]*')" | sort -u)
    for opt in $wanted; do
        [ "$opt" = --help ] && continue
        printf '%s\n' "$documented" | grep -qx -- "$opt" ||
            fail "cxr-triage $sub $opt is not in the man page's '$sub' section"
        checked=$((checked + 1))
    done
done
[ "$checked" -ge 80 ] || fail "only $checked options checked: the extraction from cli/*.c broke"
ok "$checked options of $(echo "$subcommands" | wc -w) subcommands documented"

# Exit statuses: every CLI_EXIT_* value is listed under EXIT STATUS.
statuses=$(sed -n 's/^ *CLI_EXIT_[A-Z]* = \([0-9]*\),.*/\1/p' "$CXR_SOURCE_DIR/cli/cli.h")
[ -n "$statuses" ] || fail "could not read the exit statuses of cli/cli.h"
exits=$(awk '/^\.SH EXIT STATUS/ { on = 1; next } on && /^\.SH / { exit } on' "$page")
for st in $statuses; do
    printf '%s\n' "$exits" | grep -qx "\.B $st" || fail "exit status $st is not under EXIT STATUS"
done

# The page renders without a warning (as lintian checks it).
if command -v man >/dev/null 2>&1 && command -v groff >/dev/null 2>&1; then
    warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man reports: $warnings"
    ok "man renders the page without a warning"
else
    ok "man/groff not installed: rendering not checked"
fi
ok "PASS"
