# Sourced by docs/examples/demo.sh and tests/run: installs the Debian packages listed in
# tests/tools/packages.txt that are missing (all of them on a fresh machine), so that each
# of those commands does all of its set-up by itself.
mapfile -t _lazyroot_pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' \
	"$(dirname "${BASH_SOURCE[0]}")/packages.txt")
if [ "$(dpkg-query -W -f='${db:Status-Status}\n' "${_lazyroot_pkgs[@]}" 2>/dev/null |
	grep -c '^installed$')" != "${#_lazyroot_pkgs[@]}" ]; then
	echo "installing Debian packages: ${_lazyroot_pkgs[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${_lazyroot_pkgs[@]}" >/dev/null
fi
unset _lazyroot_pkgs
