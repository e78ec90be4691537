#!/bin/sh
# shellcheck disable=SC3043 # local: every OpenWrt and Debian sh has it
# uci2conf.sh: OpenWrt's /etc/config/kfwd (UCI) -> kfwd.conf, written to stdout.
#
# Sourced by /etc/init.d/kfwd, which calls kfwd_uci2conf; run directly
# (`uci2conf.sh [CONFIG]`) it prints the translation of CONFIG (default kfwd).
# Needs OpenWrt's /lib/functions.sh (config_load and its callbacks, config_get,
# config_foreach, config_list_foreach). POSIX sh plus `local`, as busybox ash.
#
#   config kfwd 'main'       every option is the directive of the same name, `_` for `-`
#                            (option pipe_size '1m' -> pipe-size 1m); `enabled` is the
#                            init script's; `connect` takes 0/1 too; lists give one line
#                            per item (list listen); `deny` lines are written before
#                            `allow` lines, so a deny always wins over an allow.
#   config upstream 'NAME'   list server 'ADDR:PORT' (or `servers`); option name overrides
#                            the section name
#   config route             option prefix, option target (an upstream name or
#                            url-embedded); flags strip_prefix, forwarded,
#                            retry_non_idempotent (0/1); any other option is the route
#                            option of the same name (option retry_on '5xx' ->
#                            retry-on=5xx); methods and retry_on may be lists
#   option enabled '0' skips an upstream or route section.
#
# A value may not hold a newline or '#' (it could smuggle in another directive); route
# option values are single words. kfwd -t checks the rest: the init script runs it on the
# result before using it.

KFWD_UCI_ROUTE_FLAGS="strip_prefix forwarded retry_non_idempotent"

kfwd_uci_err() {
	echo "uci2conf: $*" >&2
	KFWD_UCI_ERR=1
}

# kfwd_uci_value WHERE VALUE: 0 when VALUE may go on a kfwd.conf line.
kfwd_uci_value() {
	case "$2" in
	"")
		kfwd_uci_err "$1: empty value"
		return 1
		;;
	*"
"* | *"#"*)
		kfwd_uci_err "$1: value '$2' may not contain a newline or '#'"
		return 1
		;;
	esac
	return 0
}

kfwd_uci_bool() {
	case "$1" in
	1 | on | yes | true | enabled) echo on ;;
	0 | off | no | false | disabled) echo off ;;
	*) echo "$1" ;;
	esac
}

# config_load callbacks: remember which options each section has, in file order.
kfwd_uci_cb_config() {
	[ -n "$2" ] && eval "KFWD_UCI_O_$2='' KFWD_UCI_L_$2=''"
	if [ "$1" = kfwd ] && [ -z "$KFWD_UCI_MAIN" ]; then
		KFWD_UCI_MAIN="$2"
	fi
}

kfwd_uci_cb_option() {
	local var="KFWD_UCI_O_$CONFIG_SECTION"

	eval "$var=\"\${$var} \$1\""
}

kfwd_uci_cb_list() {
	local var="KFWD_UCI_L_$CONFIG_SECTION" have

	eval "have=\" \${$var} \""
	case "$have" in
	*" $1 "*) ;;
	*) eval "$var=\"\${$var} \$1\"" ;;
	esac
}

kfwd_uci_item() {
	kfwd_uci_value "$KFWD_UCI_WHERE" "$1" && echo "$KFWD_UCI_DIRECTIVE $1"
}

kfwd_uci_main() {
	local s="$1" opts lists opt val list seen=""

	eval "opts=\"\${KFWD_UCI_O_$s}\" lists=\"\${KFWD_UCI_L_$s}\""
	for list in listen $lists; do
		case "$list" in allow | deny) continue ;; esac
		case " $seen " in *" $list "*) continue ;; esac
		seen="$seen $list"
		KFWD_UCI_DIRECTIVE=$(echo "$list" | tr _ -)
		KFWD_UCI_WHERE="$s.$list"
		config_list_foreach "$s" "$list" kfwd_uci_item
	done
	for opt in $opts; do
		[ "$opt" = enabled ] && continue
		config_get val "$s" "$opt"
		kfwd_uci_value "$s.$opt" "$val" || continue
		[ "$opt" = connect ] && val=$(kfwd_uci_bool "$val")
		echo "$(echo "$opt" | tr _ -) $val"
	done
	for list in deny allow; do
		KFWD_UCI_DIRECTIVE="$list"
		KFWD_UCI_WHERE="$s.$list"
		config_list_foreach "$s" "$list" kfwd_uci_item
	done
}

kfwd_uci_server() {
	kfwd_uci_value "$KFWD_UCI_WHERE" "$1" || return
	case "$1" in
	*[[:space:]]*) kfwd_uci_err "$KFWD_UCI_WHERE: '$1' is not one ADDR:PORT" ;;
	*) KFWD_UCI_SERVERS="$KFWD_UCI_SERVERS $1" ;;
	esac
}

kfwd_uci_upstream() {
	local s="$1" name enabled

	config_get_bool enabled "$s" enabled 1
	[ "$enabled" -eq 1 ] || return 0
	config_get name "$s" name "$s"
	kfwd_uci_value "$s.name" "$name" || return 0
	KFWD_UCI_SERVERS=""
	KFWD_UCI_WHERE="$s.server"
	config_list_foreach "$s" server kfwd_uci_server
	config_list_foreach "$s" servers kfwd_uci_server
	if [ -z "$KFWD_UCI_SERVERS" ]; then
		kfwd_uci_err "upstream $s: no server"
		return 0
	fi
	echo "upstream $name$KFWD_UCI_SERVERS"
}

kfwd_uci_route() {
	local s="$1" prefix target enabled opts opt val line flag f

	config_get_bool enabled "$s" enabled 1
	[ "$enabled" -eq 1 ] || return 0
	config_get prefix "$s" prefix
	config_get target "$s" target
	kfwd_uci_value "$s.prefix" "$prefix" || return 0
	kfwd_uci_value "$s.target" "$target" || return 0
	line="route $prefix $target"
	eval "opts=\"\${KFWD_UCI_O_$s} \${KFWD_UCI_L_$s}\""
	for opt in $opts; do
		case "$opt" in prefix | target | enabled) continue ;; esac
		flag=0
		for f in $KFWD_UCI_ROUTE_FLAGS; do
			[ "$opt" = "$f" ] && flag=1
		done
		if [ $flag -eq 1 ]; then
			config_get_bool val "$s" "$opt" 0
			[ "$val" -eq 1 ] && line="$line $(echo "$opt" | tr _ -)"
			continue
		fi
		config_get val "$s" "$opt"
		case "$opt" in
		methods | retry_on) val=$(echo "$val" | tr ' ' ',') ;;
		esac
		kfwd_uci_value "$s.$opt" "$val" || continue
		case "$val" in
		*[[:space:]]*)
			kfwd_uci_err "$s.$opt: '$val' must be one word"
			continue
			;;
		esac
		line="$line $(echo "$opt" | tr _ -)=$val"
	done
	echo "$line"
}

# kfwd_uci2conf [CONFIG]: print kfwd.conf for UCI config CONFIG (default kfwd); 1 on error.
kfwd_uci2conf() {
	local cfg="${1:-kfwd}"

	KFWD_UCI_ERR=0
	KFWD_UCI_MAIN=""
	config_cb() { kfwd_uci_cb_config "$@"; }
	option_cb() { kfwd_uci_cb_option "$@"; }
	list_cb() { kfwd_uci_cb_list "$@"; }
	config_load "$cfg"
	reset_cb
	echo "# Generated from /etc/config/$cfg by uci2conf.sh: edit that file, not this one."
	if [ -n "$KFWD_UCI_MAIN" ]; then
		kfwd_uci_main "$KFWD_UCI_MAIN"
	fi
	config_foreach kfwd_uci_upstream upstream
	config_foreach kfwd_uci_route route
	return $KFWD_UCI_ERR
}

if [ "${0##*/}" = uci2conf.sh ]; then
	# shellcheck source=/dev/null # OpenWrt's, or a stand-in named by KFWD_FUNCTIONS_SH
	. "${KFWD_FUNCTIONS_SH:-/lib/functions.sh}"
	kfwd_uci2conf "${1:-kfwd}"
fi
