#!/usr/bin/env python3
"""Check docker-compose.yml, the Dockerfile and .dockerignore for what the
deployment promises.

    scripts/check-compose.py [--python-yaml-only | --require-cli]
                             [--compose FILE] [--dockerfile FILE]
                             [--dockerignore FILE] [--cargo-toml FILE]

How the compose file is read:
  default             `docker compose config` (the plugin) if it works, else
                      `docker-compose config` if installed, else PyYAML on the
                      raw file (with compose's ${VAR:-default} interpolation
                      done here). The CLI's output is read with PyYAML, or as
                      JSON from the plugin when PyYAML is absent.
  --python-yaml-only  never run a compose CLI: PyYAML on the raw file.
  --require-cli       fail (exit 2) unless a compose CLI validates the file.

The file is checked twice: in the default mode (the host's Docker engine)
and in dind mode, with the settings docker-compose.yml documents for it
(COMPOSE_PROFILES=dind, TASKLEDGER_DOCKER_HOST=tcp://dind:2375,
TASKLEDGER_DOCKER_SOCKET=/dev/null). DOCKER_GID is set to 999 when unset.

Exit status: 0 every check passed; 1 at least one check failed (one FAIL
line each, on standard output); 2 the checks could not run (a file is
missing, no YAML parser, a required CLI is missing).

Python 3.8+, the standard library, and PyYAML where the compose CLI cannot
be used (Python 3.11+ reads Cargo.toml with tomllib; older ones use a
simpler reader).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The modes the compose file documents, as environment settings. An empty
# value makes compose use the file's ${VAR:-default}, so settings in a local
# .env cannot change what is checked.
MODE_ENV = {
    "default": {
        "COMPOSE_PROFILES": "",
        "TASKLEDGER_DOCKER_HOST": "",
        "TASKLEDGER_DOCKER_SOCKET": "",
        "TASKLEDGER_HOST_DATA_DIR": "",
    },
    "dind": {
        "COMPOSE_PROFILES": "dind",
        "TASKLEDGER_DOCKER_HOST": "tcp://dind:2375",
        "TASKLEDGER_DOCKER_SOCKET": "/dev/null",
        "TASKLEDGER_HOST_DATA_DIR": "",
    },
}
REQUIRED_SERVICES = ("postgres", "rabbitmq", "taskledger")
DOCKER_SOCKET = "/var/run/docker.sock"
DIND_DOCKER_HOST = "tcp://dind:2375"
FIRST_KEY = re.compile(r"exec\s+taskledger\s+taskledger\s+keys\s+create\s+--name\s+admin\s+--scopes\s+admin\s+--all-tenants")
HEALTH = re.compile(r"(^|[\s/])taskledger\s+health(\s|$)")
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}


class CannotRun(Exception):
    """The checks cannot be made at all (exit 2)."""


class Report:
    def __init__(self):
        self.failed = 0
        self.total = 0

    def check(self, name, problems):
        """One check: `problems` is a list of strings, empty when it passed."""
        self.total += 1
        if problems:
            self.failed += 1
            for problem in problems:
                print(f"FAIL {name}: {problem}")
        else:
            print(f"ok   {name}")


# --------------------------------------------------------------- reading --

def load_yaml_module():
    try:
        import yaml  # noqa: PLC0415
    except ImportError:
        return None
    return yaml


def compose_cli():
    """The compose command that works here, or None."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            done = subprocess.run(command + ["version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            version = (done.stdout.strip().splitlines() or ["?"])[0]
            return command, version
    return None


def mode_env(mode):
    env = dict(os.environ)
    env.update(MODE_ENV[mode])
    env.setdefault("DOCKER_GID", "999")
    if not env["DOCKER_GID"]:
        env["DOCKER_GID"] = "999"
    return env


def cli_config(command, compose_file, mode, yaml):
    """(model, error): the file as the CLI normalises it, in `mode`."""
    env = mode_env(mode)
    base = command + ["-f", str(compose_file), "--project-directory", str(compose_file.parent)]
    # Profiles from the environment (COMPOSE_PROFILES), like a user's `up`.
    quiet = subprocess.run(base + ["config", "-q"], capture_output=True, text=True, env=env, timeout=120)
    if quiet.returncode != 0:
        return None, (quiet.stderr or quiet.stdout).strip()
    # Every service, profiles or not, to check them all.
    full = base + ["--profile", "dind", "config"]
    use_json = yaml is None and command[0] == "docker"
    if use_json:
        full += ["--format", "json"]
    done = subprocess.run(full, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        return None, (done.stderr or done.stdout).strip()
    if use_json:
        return json.loads(done.stdout), None
    if yaml is None:
        raise CannotRun("PyYAML is needed to read docker-compose config's output "
                        "(pip install PyYAML), or the docker compose plugin")
    return yaml.safe_load(done.stdout), None


_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", re.S)


def interpolate(value, env, errors):
    """Compose's variable substitution on every string in `value`."""
    if isinstance(value, dict):
        return {interpolate(k, env, errors): interpolate(v, env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, errors) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        if match.group(1):
            return "$"
        if match.group(3):
            return env.get(match.group(3), "")
        braced = _BRACED.match(match.group(2))
        if not braced:
            errors.append(f"invalid interpolation ${{{match.group(2)}}}")
            return ""
        name, op, arg = braced.groups()
        current = env.get(name)
        unset = current is None
        empty = unset or current == ""
        if op is None:
            return current or ""
        if op == ":-":
            return interpolate(arg, env, errors) if empty else current
        if op == "-":
            return interpolate(arg, env, errors) if unset else current
        if op in (":?", "?"):
            if (op == ":?" and empty) or (op == "?" and unset):
                errors.append(f"required variable {name} is unset: {arg}")
                return ""
            return current
        if op == ":+":
            return "" if empty else interpolate(arg, env, errors)
        if op == "+":
            return "" if unset else interpolate(arg, env, errors)
        return current or ""

    return _VAR.sub(substitute, value)


def raw_config(compose_file, mode, yaml):
    """(model, error): the raw file, interpolated here, in `mode`."""
    if yaml is None:
        raise CannotRun("PyYAML is not installed (pip install PyYAML) and no compose CLI is used")
    try:
        document = yaml.safe_load(compose_file.read_text())
    except yaml.YAMLError as error:
        return None, f"not valid YAML: {error}"
    if not isinstance(document, dict):
        return None, "not a YAML mapping"
    errors = []
    model = interpolate(document, mode_env(mode), errors)
    if errors:
        return None, "; ".join(errors)
    return model, None


# --------------------------------------------------------- normalisation --

def services(model):
    return (model or {}).get("services") or {}


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = {}
        for item in env:
            key, _, value = str(item).partition("=")
            pairs[key] = value
        return pairs
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def ports(service):
    """[(host_ip, published, target)] for each published port."""
    result = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            result.append((str(port.get("host_ip") or ""), str(port.get("published") or ""), str(port.get("target") or "")))
            continue
        text = str(port).split("/")[0]
        host_ip = ""
        if text.startswith("["):
            host_ip, _, text = text[1:].partition("]")
            text = text.lstrip(":")
            parts = text.split(":")
        else:
            parts = text.split(":")
            if len(parts) == 3:
                host_ip = parts.pop(0)
        if len(parts) == 1:
            result.append((host_ip, "", parts[0]))
        else:
            result.append((host_ip, parts[0], parts[1]))
    return result


def mounts(service, base):
    """[{type, source, target, read_only}] for each volume."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source = str(volume.get("source") or "")
            kind = volume.get("type") or ("bind" if source.startswith(("/", ".", "~")) else "volume")
            read_only = bool(volume.get("read_only"))
            target = str(volume.get("target") or "")
        else:
            parts = str(volume).split(":")
            if len(parts) == 1:
                source, target, options = "", parts[0], ""
            else:
                source, target = parts[0], parts[1]
                options = parts[2] if len(parts) > 2 else ""
            kind = "bind" if source.startswith(("/", ".", "~")) else ("volume" if source else "anonymous")
            read_only = "ro" in options.split(",")
        if kind == "bind" and source.startswith("."):
            source = str((base / source).resolve())
        elif kind == "bind" and source.startswith("~"):
            source = str(Path(source).expanduser())
        result.append({"type": kind, "source": source, "target": target.rstrip("/") or "/", "read_only": read_only})
    return result


def healthcheck_text(service):
    health = service.get("healthcheck") or {}
    if health.get("disable"):
        return None
    test = health.get("test")
    if test is None:
        return None
    if isinstance(test, str):
        return test
    words = [str(w) for w in test]
    if not words or words[0] == "NONE":
        return None
    if words[0] in ("CMD", "CMD-SHELL"):
        words = words[1:]
    return " ".join(words)


def depends_on(service):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(d): {} for d in deps}
    return {str(k): (v or {}) for k, v in deps.items()}


def profiles(service):
    return [str(p) for p in service.get("profiles") or []]


def mount_at(mount_list, target):
    target = target.rstrip("/") or "/"
    for mount in mount_list:
        if mount["target"] == target:
            return mount
    return None


def mount_covering(mount_list, path):
    path = path.rstrip("/")
    for mount in mount_list:
        if path == mount["target"] or path.startswith(mount["target"] + "/"):
            return mount
    return None


# ---------------------------------------------------------------- compose --

def check_compose(report, raw_text, model, dind_model, base):
    svc = services(model)

    report.check("compose: services postgres, rabbitmq, taskledger", [
        f"no service `{name}`" for name in REQUIRED_SERVICES if name not in svc])
    if any(name not in svc for name in REQUIRED_SERVICES):
        return
    tl = svc["taskledger"]
    tl_env = environment(tl)
    tl_mounts = mounts(tl, base)

    report.check("compose: postgres and rabbitmq have healthchecks", [
        f"`{name}` has no healthcheck" for name in ("postgres", "rabbitmq") if not healthcheck_text(svc[name])])

    text = healthcheck_text(tl)
    report.check("compose: taskledger's healthcheck runs `taskledger health`",
                 [] if text and HEALTH.search(text) else [f"its healthcheck test is {text!r}"])

    deps = depends_on(tl)
    problems = []
    for name in ("postgres", "rabbitmq"):
        if name not in deps:
            problems.append(f"taskledger does not depend on {name}")
        elif deps[name].get("condition") != "service_healthy":
            problems.append(f"taskledger depends on {name} with condition {deps[name].get('condition')!r}, not service_healthy")
    report.check("compose: depends_on waits for service_healthy", problems)

    problems = []
    config = tl_env.get("TASKLEDGER_CONFIG", "")
    if not config:
        problems.append("TASKLEDGER_CONFIG is not set in taskledger's environment")
    else:
        mount = mount_covering(tl_mounts, config)
        if mount is None:
            problems.append(f"nothing is mounted at TASKLEDGER_CONFIG={config}")
        else:
            if not mount["read_only"]:
                problems.append(f"the config mount at {mount['target']} is not read-only (:ro)")
            if mount["type"] != "bind":
                problems.append(f"the config at {mount['target']} is a {mount['type']}, not a file from the repository")
            elif mount["target"] == config.rstrip("/") and not Path(mount["source"]).is_file():
                problems.append(f"the mounted config {mount['source']} is not a file in the repository "
                                "(Docker would create an empty directory in its place)")
    report.check("compose: TASKLEDGER_CONFIG set and the config file mounted read-only", problems)

    problems = []
    for name, service in sorted(svc.items()):
        for host_ip, published, target in ports(service):
            if host_ip not in LOOPBACK:
                problems.append(f"{name} publishes {published or '(random)'}->{target} on "
                                f"{host_ip or 'every interface'}, not 127.0.0.1")
    listen = tl_env.get("TASKLEDGER_LISTEN", "")
    listen_host, _, listen_port = listen.rpartition(":")
    if listen_host not in ("0.0.0.0", "[::]", "::"):
        problems.append(f"TASKLEDGER_LISTEN={listen!r}: inside a container it must be 0.0.0.0:PORT for the port mapping to reach it")
    if not any(target == listen_port for _, _, target in ports(tl)):
        problems.append(f"taskledger does not publish its listen port {listen_port or '?'}")
    report.check("compose: ports published on 127.0.0.1 only; TASKLEDGER_LISTEN 0.0.0.0", problems)

    report.check("compose: DATABASE_URL and AMQP_URL set", [
        f"{key} is not set in taskledger's environment" for key in ("DATABASE_URL", "AMQP_URL") if not tl_env.get(key)])

    problems = []
    socket = mount_at(tl_mounts, DOCKER_SOCKET)
    docker_host = tl_env.get("DOCKER_HOST", "")
    if socket is None and not docker_host:
        problems.append(f"taskledger has neither a {DOCKER_SOCKET} mount nor DOCKER_HOST")
    host_engine = socket is not None and socket["source"] == DOCKER_SOCKET
    if host_engine and not tl.get("group_add") and str(tl.get("user", "")).split(":")[0] not in ("0", "root"):
        problems.append("the host's socket is mounted but taskledger (uid 10001 in the image) has no group_add for its group")
    if docker_host and not docker_host.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
        problems.append(f"DOCKER_HOST={docker_host!r} is not an engine address")
    if not re.search(r"#.*docker\.sock", raw_text) or not re.search(r"#.*(control|root)", raw_text, re.I):
        problems.append("the comments do not document the socket mount and what it gives the container")
    report.check("compose: the Docker engine option (default: the host's socket)", problems)

    problems = []
    data_dir = tl_env.get("TASKLEDGER_DATA_DIR", "")
    if not data_dir.startswith("/"):
        problems.append(f"TASKLEDGER_DATA_DIR={data_dir!r} is not an absolute path")
    else:
        mount = mount_at(tl_mounts, data_dir)
        if mount is None:
            problems.append(f"nothing is mounted at TASKLEDGER_DATA_DIR={data_dir}")
        elif host_engine and (mount["type"] != "bind" or mount["source"].rstrip("/") != data_dir.rstrip("/")):
            problems.append(f"with the host's engine the data dir must be a host directory at the same path "
                            f"(it is {mount['type']} {mount['source'] or '?'} at {data_dir}): the engine "
                            "bind-mounts task inputs from the host's path")
        elif mount["read_only"]:
            problems.append("the data dir is mounted read-only")
    report.check("compose: the data dir mounted at the same absolute path", problems)

    header = []
    for line in raw_text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    report.check("compose: the first-key command in the comment at the top",
                 [] if FIRST_KEY.search("\n".join(header)) else [
                     "the leading comment does not show "
                     "`docker compose exec taskledger taskledger keys create --name admin --scopes admin --all-tenants`"])

    problems = []
    dind = [name for name, service in svc.items() if "dind" in profiles(service)]
    if not dind:
        problems.append("no service in the profile `dind`")
    for name in dind:
        service = svc[name]
        if not service.get("privileged"):
            problems.append(f"`{name}` is not privileged (Docker in Docker needs it)")
        if "dind" not in str(service.get("image", "")):
            problems.append(f"`{name}` runs {service.get('image')!r}, not a docker:dind image")
    if DIND_DOCKER_HOST not in raw_text:
        problems.append(f"the comments do not give DOCKER_HOST={DIND_DOCKER_HOST}")
    for name in REQUIRED_SERVICES:
        if profiles(svc[name]):
            problems.append(f"`{name}` is in profiles {profiles(svc[name])}: it must run by default")
    report.check("compose: the opt-in `dind` profile", problems)

    if dind_model is None:
        return
    dsvc = services(dind_model)
    problems = []
    dtl = dsvc.get("taskledger") or {}
    denv = environment(dtl)
    if denv.get("DOCKER_HOST") != DIND_DOCKER_HOST:
        settings = " ".join(f"{k}={v}" for k, v in MODE_ENV["dind"].items() if v)
        problems.append(f"with {settings} taskledger's DOCKER_HOST is {denv.get('DOCKER_HOST')!r}, not {DIND_DOCKER_HOST}")
    dmount = mount_at(mounts(dtl, base), DOCKER_SOCKET)
    if dmount is not None and dmount["source"] == DOCKER_SOCKET:
        problems.append("in dind mode the host's Docker socket is still mounted into taskledger")
    engine = dsvc.get("dind")
    if engine is None:
        problems.append("no service `dind` (DOCKER_HOST names it)")
    else:
        data_dir = denv.get("TASKLEDGER_DATA_DIR", "")
        if data_dir and mount_at(mounts(engine, base), data_dir) is None:
            problems.append(f"`dind` does not mount the data dir at {data_dir}: its engine resolves the "
                            "runner's bind mounts in its own file system")
    report.check("compose: dind mode (its documented settings) uses tcp://dind:2375", problems)


# ------------------------------------------------------------- Dockerfile --

def dockerfile_instructions(text):
    """[(line number, INSTRUCTION, arguments)] with continuations joined."""
    lines = text.splitlines()
    escape = "\\"
    # Parser directives: leading `# name=value` comments.
    directives = {}
    for line in lines:
        match = re.match(r"^\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$", line)
        if not match:
            break
        directives[match.group(1).lower()] = match.group(2)
    if directives.get("escape") == "`":
        escape = "`"
    result = []
    current, start = "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if not current:
            start = number
        if stripped.endswith(escape):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        result.append((start, word.upper(), rest.strip()))
        current = ""
    if current:
        word, _, rest = current.partition(" ")
        result.append((start, word.upper(), rest.strip()))
    return result, directives


def copy_parts(arguments):
    """(flags, sources, destination) of a COPY/ADD."""
    flags = []
    rest = arguments
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except ValueError:
            words = shlex.split(rest)
    else:
        words = shlex.split(rest)
    if len(words) < 2:
        return flags, words, ""
    return flags, words[:-1], words[-1]


def workspace_members(cargo_toml):
    text = cargo_toml.read_text()
    try:
        import tomllib  # noqa: PLC0415
    except ImportError:
        block = re.search(r"^\[workspace\][^\[]*?members\s*=\s*\[([^\]]*)\]", text, re.M | re.S)
        return re.findall(r'"([^"]+)"', block.group(1)) if block else []
    return tomllib.loads(text).get("workspace", {}).get("members", [])


def is_source_copy(sources):
    for source in sources:
        clean = source.rstrip("/")
        if clean in (".", "", "src", "./src") or clean.startswith(("src/", "./src/")):
            return True
    return False


def check_dockerfile(report, text, cargo_toml):
    instructions, directives = dockerfile_instructions(text)
    stages = []
    for number, word, arguments in instructions:
        if word == "FROM":
            stages.append({"line": number, "from": arguments, "body": []})
        elif stages:
            stages[-1]["body"].append((number, word, arguments))

    report.check("Dockerfile: multi-stage", [] if len(stages) >= 2 else [f"{len(stages)} FROM stage(s)"])
    if not stages:
        return

    # The stage that builds the binary: the last one running `cargo build`.
    build_stages = [s for s in stages if any(w == "RUN" and re.search(r"cargo\s+(\+\S+\s+)?build", a) for _, w, a in s["body"])]
    problems = []
    members_problems = []
    touch_problems = []
    if not build_stages:
        problems.append("no stage runs `cargo build`")
    else:
        stage = build_stages[-1]
        body = stage["body"]
        source_at = next((i for i, (_, w, a) in enumerate(body)
                          if w in ("COPY", "ADD") and not any(f.startswith("--from") for f in copy_parts(a)[0])
                          and is_source_copy(copy_parts(a)[1])), None)
        if source_at is None:
            problems.append("the build stage never copies the sources (COPY . . or COPY src …)")
        else:
            before = body[:source_at]
            copied = []
            for _, w, a in before:
                if w in ("COPY", "ADD"):
                    copied += copy_parts(a)[1]
            chef = any(w == "RUN" and "cargo chef cook" in a for _, w, a in before)
            names = {Path(c).name for c in copied}
            if not chef and not {"Cargo.toml", "Cargo.lock"} <= names:
                problems.append(f"Cargo.toml and Cargo.lock are not copied before the sources (line {body[source_at][0]})")
            if not any(w == "RUN" and (re.search(r"cargo\s+build", a) or "cargo chef cook" in a) for _, w, a in before):
                problems.append(f"no dependency-only `cargo build` (or `cargo chef cook`) before the sources are copied (line {body[source_at][0]})")
            if not chef and not problems:
                try:
                    members = workspace_members(cargo_toml)
                except OSError as error:
                    members, members_problems = [], [f"cannot read {cargo_toml}: {error}"]
                for member in members:
                    if member in (".", ""):
                        continue
                    wanted = f"{member.rstrip('/')}/Cargo.toml"
                    if not any(c.lstrip("./").rstrip("/") == wanted for c in copied):
                        members_problems.append(f"workspace member {member}: {wanted} is not copied before the sources")
                after = body[source_at + 1:]
                if not any(w == "RUN" and re.search(r"\btouch\b", a) for _, w, a in after):
                    touch_problems.append("nothing touches the real sources after COPY: cargo may keep the stand-in "
                                          "crates (their build is newer than the copied files) and ship an empty binary")
    report.check("Dockerfile: a dependency-only build before the sources are copied", problems)
    if not problems and not any("cargo chef cook" in a for _, w, a in build_stages[-1]["body"]):
        report.check("Dockerfile: every workspace member's Cargo.toml in the dependency layer", members_problems)
        report.check("Dockerfile: sources touched before the real build", touch_problems)

    final = stages[-1]["body"]
    problems = []
    health = [a for _, w, a in final if w == "HEALTHCHECK"]
    if not health:
        problems.append("the final stage has no HEALTHCHECK")
    elif not any(HEALTH.search(re.sub(r'[\[\]",]', " ", a)) for a in health):
        problems.append(f"HEALTHCHECK does not run `taskledger health`: {health[-1]}")
    report.check("Dockerfile: HEALTHCHECK runs `taskledger health`", problems)

    problems = []
    users = [a.split(":")[0].strip() for _, w, a in final if w == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the final stage runs as root (no USER, or USER root)")
    exposed = " ".join(a for _, w, a in final if w == "EXPOSE").split()
    if not any(p.split("/")[0] == "8080" for p in exposed):
        problems.append("EXPOSE 8080 is missing")
    if not any(w == "COPY" and copy_parts(a)[2].rstrip("/") in ("/usr/local/bin/taskledger", "/usr/local/bin")
               for _, w, a in final):
        problems.append("the binary is not copied to /usr/local/bin/taskledger")
    envs = " ".join(a for _, w, a in final if w == "ENV")
    if not re.search(r"TASKLEDGER_LISTEN[= ]0\.0\.0\.0:8080", envs):
        problems.append("ENV TASKLEDGER_LISTEN=0.0.0.0:8080 is missing")
    report.check("Dockerfile: runtime stage (non-root, EXPOSE 8080, binary on PATH, listen 0.0.0.0)", problems)

    problems = []
    if "syntax" in directives:
        problems.append(f"`# syntax={directives['syntax']}` makes BuildKit fetch a frontend image from a registry")
    for number, word, arguments in instructions:
        if word == "RUN" and re.search(r"(^|\s)--mount", arguments):
            problems.append(f"line {number}: RUN --mount needs BuildKit (the classic builder rejects it)")
    report.check("Dockerfile: builds without BuildKit-only features or registry frontends", problems)


def check_dockerignore(report, text):
    entries = {line.strip().rstrip("/").lstrip("/") for line in text.splitlines()
               if line.strip() and not line.strip().startswith("#")}
    problems = []
    for wanted, names in (("target", ("target", "**/target", "target/*")), (".git", (".git",))):
        if not entries.intersection(names):
            problems.append(f"{wanted}/ is not excluded from the build context")
    # tests/ may go: the service binary embeds nothing from it.
    for kept in ("migrations", "config", "src"):
        if kept in entries:
            problems.append(f"{kept}/ is excluded, but the build needs it")
    report.check(".dockerignore: build output and history left out", problems)


# ------------------------------------------------------------------- main --

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--python-yaml-only", action="store_true", help="parse with PyYAML; never run a compose CLI")
    mode.add_argument("--require-cli", action="store_true", help="exit 2 unless a compose CLI validates the file")
    parser.add_argument("--compose", type=Path, default=REPO / "docker-compose.yml")
    parser.add_argument("--dockerfile", type=Path, default=REPO / "Dockerfile")
    parser.add_argument("--dockerignore", type=Path, default=REPO / ".dockerignore")
    parser.add_argument("--cargo-toml", type=Path, default=REPO / "Cargo.toml")
    args = parser.parse_args(argv)

    try:
        return run(args)
    except CannotRun as error:
        print(f"check-compose: cannot check: {error}", file=sys.stderr)
        return 2


def run(args):
    for path in (args.compose, args.dockerfile, args.dockerignore, args.cargo_toml):
        if not path.is_file():
            raise CannotRun(f"{path} does not exist")
    compose_file = args.compose.resolve()
    raw_text = compose_file.read_text()
    yaml = load_yaml_module()
    report = Report()

    cli = None if args.python_yaml_only else compose_cli()
    if args.require_cli and cli is None:
        raise CannotRun("no compose CLI works here (neither `docker compose` nor `docker-compose`)")
    if cli is None and yaml is None:
        raise CannotRun("no compose CLI and no PyYAML: install PyYAML (pip install PyYAML) or Docker Compose")

    models = {}
    for name in MODE_ENV:
        if cli is not None:
            command, version = cli
            model, error = cli_config(command, compose_file, name, yaml)
            report.check(f"compose: `{' '.join(command)} config` accepts the file ({name} mode; {version})",
                         [error] if error else [])
            if model is None and yaml is not None:
                # Still report what else is wrong, from the raw file.
                model, _ = raw_config(compose_file, name, yaml)
        else:
            model, error = raw_config(compose_file, name, yaml)
            report.check(f"compose: the file parses and interpolates ({name} mode; PyYAML)", [error] if error else [])
        models[name] = model

    if models["default"] is not None:
        check_compose(report, raw_text, models["default"], models["dind"], compose_file.parent)
    check_dockerfile(report, args.dockerfile.read_text(), args.cargo_toml)
    check_dockerignore(report, args.dockerignore.read_text())

    print(f"{report.total - report.failed}/{report.total} checks passed"
          + (f", {report.failed} failed" if report.failed else ""))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
