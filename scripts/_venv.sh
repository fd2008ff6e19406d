# Sourced by the scripts in this folder: create virtualenvs (Python 3.11 or 3.12) and install requirements.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in python3.12 python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.11 or 3.12 is required (Azure Functions Python versions this app supports)" >&2
  return 1
}

# ensure_venv DIR REQUIREMENTS: create DIR if needed; (re)install when a requirements file changed.
ensure_venv() {
  local venv=$1 requirements=$2
  if [ ! -x "$venv/bin/python" ]; then
    "$(pick_python)" -m venv "$venv"
  fi
  local stamp="$venv/.installed-$(basename "$requirements")"
  if [ ! -f "$stamp" ] || [ -n "$(find requirements*.txt -newer "$stamp" 2>/dev/null)" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    touch "$stamp"
  fi
}

# apt_install WHAT PACKAGE...: install Debian packages with apt-get (as root, or through sudo); WHAT says
# what they are for in the messages.
apt_install() {
  local what="$1"
  shift
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
      echo "error: $what is required: apt-get install $*" >&2
      return 1
    }
    sudo="sudo"
  fi
  echo "installing $what (Debian packages: $*) ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_postgres: the PostgreSQL server programs the tests start (Debian's postgresql package), installed
# when missing. POSTGRES_BIN_DIR names another installation.
ensure_postgres() {
  if [ -n "${POSTGRES_BIN_DIR:-}" ] || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null ||
    command -v initdb >/dev/null; then
    return 0
  fi
  apt_install "the PostgreSQL server for the tests" postgresql postgresql-contrib
}

# ensure_chromium: the headless browser of the chat page's tests (Debian's chromium package; browsers that
# tools download do not work here), installed when missing. CHROMIUM_PATH names another one.
ensure_chromium() {
  if [ -n "${CHROMIUM_PATH:-}" ] || command -v chromium >/dev/null; then
    return 0
  fi
  apt_install "Chromium for the browser tests" chromium
}
