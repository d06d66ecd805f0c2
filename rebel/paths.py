"""Where the repository's own files are: a leaf module (imports nothing of the project)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
IMAGE_SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "image.schema.yaml"
CONFIG_DIR = REPO_ROOT / "workflow" / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "embedded.yaml"
