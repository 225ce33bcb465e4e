# Sourced by scripts/soak.sh and scripts/fuzz.sh: each writes its own section
# of RELIABILITY.md.

# replace_section NAME FILE BODY: put BODY's lines between FILE's markers
# <!-- NAME:begin --> and <!-- NAME:end -->, keeping everything else. A
# missing file gets the skeleton; a file without the markers gets the
# section appended.
replace_section() {
    local name=$1 file=$2 body=$3 title
    local begin="<!-- $name:begin -->" end="<!-- $name:end -->"
    if [[ ! -f $file ]]; then
        cat >"$file" <<'EOF'
# Reliability

How weave-rs holds up over time and against malformed input. Both sections
are written by scripts, each between its own marker comments; text outside
the markers is kept.

## Soak

<!-- soak:begin -->
Not run yet: `scripts/soak.sh [MINUTES]` writes this section.
<!-- soak:end -->

## Fuzz

<!-- fuzz:begin -->
Not run yet: `scripts/fuzz.sh [SECONDS]` writes this section.
<!-- fuzz:end -->
EOF
    fi
    if ! grep -qxF "$begin" "$file" || ! grep -qxF "$end" "$file"; then
        title=${name^}
        printf '\n## %s\n\n%s\n%s\n' "$title" "$begin" "$end" >>"$file"
    fi
    awk -v b="$begin" -v e="$end" -v body="$body" '
        $0 == b { print; while ((getline l < body) > 0) print l; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' "$file" >"$file.tmp"
    mv "$file.tmp" "$file"
}
