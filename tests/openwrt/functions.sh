# shellcheck disable=SC3043,SC2034 # local: every OpenWrt and Debian sh has it; variables set by eval
# A stand-in for OpenWrt's /lib/functions.sh and procd's shell API, for tests/test_openwrt.py:
# enough of both for the real scripts/packaging/openwrt/kfwd.init and uci2conf.sh to run
# under dash. config_load reads "$UCI_CONFIG_DIR/NAME" and evaluates it as OpenWrt's uci_load
# evaluates `uci export` (the same syntax: package/config/option/list lines); the
# variables and callbacks follow OpenWrt's functions.sh. procd_* calls and the rc.common
# verbs the init script uses are appended to "$PROCD_LOG".

append() {
	local var="$1" value="$2" sep="${3:- }"

	eval "$var=\${$var:+\${$var}\${sep}}\$value"
}

config_set() {
	eval "CONFIG_${1}_${2}=\$3"
}

config_get() {
	case "$3" in
	"") eval echo "\"\${CONFIG_${1}_${2}:-\${4}}\"" ;;
	*) eval "$1=\${CONFIG_${2}_${3}:-\${4}}" ;;
	esac
}

get_bool() {
	case "$1" in
	1 | on | true | yes | enabled) echo 1 ;;
	0 | off | false | no | disabled) echo 0 ;;
	*) echo "$2" ;;
	esac
}

config_get_bool() {
	local _tmp

	config_get _tmp "$2" "$3" "$4"
	eval "$1=\$(get_bool \"\$_tmp\" \"\$4\")"
}

reset_cb() {
	config_cb() { return 0; }
	option_cb() { return 0; }
	list_cb() { return 0; }
}
reset_cb

package() { return 0; }

config() {
	local cfgtype="$1" name="$2"

	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	name="${name:-cfg$CONFIG_NUM_SECTIONS}"
	append CONFIG_SECTIONS "$name"
	CONFIG_SECTION="$name"
	config_set "$CONFIG_SECTION" TYPE "$cfgtype"
	config_cb "$cfgtype" "$name"
}

option() {
	local varname="$1"

	shift
	config_set "$CONFIG_SECTION" "$varname" "$*"
	option_cb "$varname" "$*"
}

list() {
	local varname="$1" len

	shift
	config_get len "$CONFIG_SECTION" "${varname}_LENGTH" 0
	[ "$len" = 0 ] && append CONFIG_LIST_STATE "${CONFIG_SECTION}_${varname}"
	len=$((len + 1))
	config_set "$CONFIG_SECTION" "${varname}_ITEM$len" "$*"
	config_set "$CONFIG_SECTION" "${varname}_LENGTH" "$len"
	append "CONFIG_${CONFIG_SECTION}_${varname}" "$*" " "
	list_cb "$varname" "$*"
}

config_load() {
	local var

	for var in $CONFIG_LIST_STATE; do
		eval "CONFIG_${var}='' CONFIG_${var}_LENGTH=''"
	done
	CONFIG_LIST_STATE=""
	CONFIG_SECTIONS=""
	CONFIG_NUM_SECTIONS=0
	CONFIG_SECTION=""
	eval "$(cat "${UCI_CONFIG_DIR:-/etc/config}/$1")" || return 1
	${CONFIG_SECTION:+config_cb}
	return 0
}

config_foreach() {
	local ___function="$1" ___type="$2" section cfgtype

	shift 2
	for section in $CONFIG_SECTIONS; do
		config_get cfgtype "$section" TYPE
		[ -n "$___type" ] && [ "x$cfgtype" != "x$___type" ] && continue
		eval "$___function \"\$section\" \"\$@\""
	done
}

config_list_foreach() {
	local section="$1" option="$2" function="$3" val len c=1

	shift 3
	config_get len "$section" "${option}_LENGTH"
	[ -z "$len" ] && return 0
	while [ "$c" -le "$len" ]; do
		config_get val "$section" "${option}_ITEM$c"
		eval "$function \"\$val\" \"\$@\""
		c=$((c + 1))
	done
}

procd_open_instance() { echo "open_instance" >>"$PROCD_LOG"; }
procd_set_param() { echo "set_param $*" >>"$PROCD_LOG"; }
procd_close_instance() { echo "close_instance" >>"$PROCD_LOG"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >>"$PROCD_LOG"; }
start() { echo "start" >>"$PROCD_LOG"; }
stop() { echo "stop" >>"$PROCD_LOG"; }
