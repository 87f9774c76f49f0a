"""Install tiktoken's cl100k_base and o200k_base encoding files from the litellm wheel on PyPI.

Nothing downloads encodings at run time: this runs at install time (make install-test), takes
the files out of the wheel (only those files, not litellm) and checks them against the SHA-256
that tiktoken itself expects.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LITELLM = "litellm==1.110.2"
# litellm stores tiktoken's cache files under the SHA-1 of their download URL.
FILES = {
    "cl100k_base": (
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}


def main(dest: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    if all((out / f"{name}.tiktoken").is_file() for name in FILES):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", LITELLM, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("litellm-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name, (member, sha) in FILES.items():
                data = zf.read(f"litellm/litellm_core_utils/tokenizers/{member}")
                if hashlib.sha256(data).hexdigest() != sha:
                    sys.exit(f"{name}: checksum mismatch in {wheel.name}")
                (out / f"{name}.tiktoken").write_bytes(data)
    print(f"tiktoken encodings installed in {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".cache/tiktoken")
