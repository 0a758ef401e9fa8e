# Sourced by docker/odoo-entrypoint.sh and docker/services-entrypoint.sh (POSIX sh): reading the
# secrets and refusing the values that would break what they are written into.

NL='
'
CR=$(printf '\r')

die() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') ERROR ${0##*/}: $*" >&2; exit 1; }

# NAME from the file $NAME_FILE when that is set (Docker secrets): the value then appears in no
# `docker inspect` output. Files usually end with one newline: that one is dropped, any other
# line break is refused by check_secret.
file_env() {
    eval "file=\${${1}_FILE:-}"
    if [ -n "$file" ]; then
        [ -r "$file" ] || die "$1_FILE=$file cannot be read"
        # the shell drops NUL bytes silently: compare the sizes to see one
        [ "$(tr -d '\000' < "$file" | wc -c)" = "$(wc -c < "$file")" ] ||
            die "$1_FILE=$file holds a NUL byte"
        # the x keeps $(...) from eating every trailing newline
        value=$(cat "$file"; printf x)
        value=${value%x}
        value=${value%"$NL"}
        eval "$1=\$value"
        export "$1"
        unset "${1}_FILE" value
    fi
    check_secret "$1"
}

# A secret is written into configuration files and URLs: a line break in it would add options
# (odoo.conf) or split a line. NUL cannot reach a shell variable (file_env refuses it in a file).
check_secret() {
    eval "value=\${$1:-}"
    case "$value" in
        *"$NL"* | *"$CR"*) die "$1 holds a line break (newline or carriage return): refused" ;;
    esac
    unset value
}

# Compose writes the broker password into the URL as it is and cannot percent-encode it: a
# character such as / @ : # ? % would move the host or the virtual host, or end in a log line.
check_broker_url() {
    eval "url=\${$1:-}"
    rest=${url#*://}
    case "$rest" in
        *@*)
            userinfo=${rest%@*}
            case "$userinfo" in
                *:*) password=${userinfo#*:} ;;
                *) password= ;;
            esac
            case "$password" in
                *[!A-Za-z0-9._~-]*)
                    die "RABBITMQ_PASSWORD must be URL-safe (use openssl rand -hex 32): $1 is refused" ;;
            esac
            ;;
    esac
    unset url rest userinfo password
}
