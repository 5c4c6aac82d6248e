"""The deployable image and the KubeRay manifests agree, checked without a container engine or a cluster.

The Dockerfile's Ray base must be the Ray that pyproject.toml pins, on a Python the project supports;
every manifest under cluster/ must run that Ray and take its image from the one kustomize component;
what the Dockerfile copies must exist and be in the build context; torch must be pinned in launch.sh
only; and the manifests must still validate against KubeRay's own CRD schemas (vendored in
tests/fixtures/kuberay/, with unknown fields refused as `kubectl apply` refuses them).
`./launch.sh image` runs against a stand-in engine that records its arguments.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project supports 3.10, whose standard library has no TOML reader
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
CRD_DIR = REPO / "tests" / "fixtures" / "kuberay"
IMAGE_COMPONENT = CLUSTER / "image" / "kustomization.yaml"
# kustomization folder -> the manifest it applies
WORKLOADS = {
    "train": "rayjob-train.yaml",
    "eval": "rayjob-eval.yaml",
    "raycluster": "raycluster-gpu.yaml",
}
PLACEHOLDER = "seller-dist"  # the image name every manifest uses; the component's images: entry rewrites it
RAY_BASE = re.compile(
    r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3)(?P<minor>\d+)-(?P<platform>gpu|cu\d+)$"
)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ------------------------------------------------------------------------------------------ parsing
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or not (line or pending):
            continue  # comments are dropped inside a continued instruction too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def dockerfile_arg_defaults() -> dict[str, str | None]:
    defaults: dict[str, str | None] = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ARG":
            name, eq, value = args.partition("=")
            defaults.setdefault(name, value if eq else None)
    return defaults


def ray_base_image() -> re.Match[str]:
    """The Dockerfile's FROM, resolved through its ARG default."""
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms == ["${RAY_IMAGE}"], f"one stage, FROM ${{RAY_IMAGE}}; got {froms}"
    image = dockerfile_arg_defaults()["RAY_IMAGE"] or ""
    m = RAY_BASE.match(image)
    assert m, f"RAY_IMAGE={image!r} is not a rayproject/ray GPU tag (VERSION-pyNN-gpu or -cuNNN)"
    return m


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_requirements() -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in pyproject()["project"]["dependencies"]]
    return {r.name: r for r in reqs}


def pinned_ray_version() -> str:
    pins = [s.version for s in project_requirements()["ray"].specifier if s.operator == "=="]
    assert len(pins) == 1, "pyproject.toml pins ray with =="
    return pins[0]


def launch_sh_torch_version() -> str:
    m = re.search(
        r'^TORCH_VERSION="\$\{SELLER_TORCH_VERSION:-([^}]+)\}"$', (REPO / "launch.sh").read_text(), re.M
    )
    assert m, "launch.sh sets TORCH_VERSION from SELLER_TORCH_VERSION with a default"
    return m.group(1)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=YAML_LOADER)


def image_component() -> dict[str, str]:
    component = load_yaml(IMAGE_COMPONENT)
    assert component["kind"] == "Component"
    images = component["images"]
    assert len(images) == 1 and images[0]["name"] == PLACEHOLDER, images
    return images[0]


def containers(node: Any) -> list[dict[str, Any]]:
    """Every container of a manifest, at any depth (kustomize's image transformer finds the same)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += value
            else:
                found += containers(value)
    elif isinstance(node, list):
        for value in node:
            found += containers(value)
    return found


def walk(node: Any) -> list[Any]:
    """The node and everything under it."""
    out = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        out += walk(child)
    return out


def rendered(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as `kubectl apply -k` sends it: the placeholder image replaced by the component's."""
    image = image_component()
    ref = f"{image['newName']}:{image['newTag']}"
    doc = yaml.safe_load(yaml.safe_dump(manifest))
    for container in containers(doc):
        if container.get("image") == PLACEHOLDER:
            container["image"] = ref
    return doc


def manifests() -> dict[str, dict[str, Any]]:
    return {folder: load_yaml(CLUSTER / folder / name) for folder, name in WORKLOADS.items()}


# ------------------------------------------------------------------------------ Dockerfile vs pins
def test_base_image_is_rays_gpu_image_at_the_pinned_ray_on_a_supported_python():
    base = ray_base_image()
    assert base["ray"] == pinned_ray_version(), (
        f"the Dockerfile's base is Ray {base['ray']}, pyproject.toml pins ray=={pinned_ray_version()}"
    )
    python = f"{base['py']}.{base['minor']}"
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(python), python
    # the Dockerfile reads pyproject.toml's dependencies with tomllib
    assert int(base["minor"]) >= 11, f"the image's Python {python} has no tomllib"


def test_no_pin_is_written_twice():
    """Dependencies come from pyproject.toml at build time and torch from launch.sh: no `pkg==version`
    in the Dockerfile, torch not pinned in pyproject.toml, launch.sh passes its pin as the build arg."""
    code = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    pins = [p for p in re.findall(r"[A-Za-z0-9_.\-\[\],]+==[^\s\"']+", " ".join(code)) if "${" not in p]
    assert pins == [], f"pins copied into the Dockerfile: {pins}"
    assert dockerfile_arg_defaults()["TORCH_VERSION"] is None, (
        "TORCH_VERSION has no default in the Dockerfile"
    )
    torch = project_requirements()["torch"]
    assert all(s.operator != "==" for s in torch.specifier), (
        "torch is pinned in launch.sh, not pyproject.toml"
    )
    assert '--build-arg "TORCH_VERSION=$TORCH_VERSION"' in (REPO / "launch.sh").read_text()
    assert any("tomllib" in args and "pyproject.toml" in args for args in code), (
        "the image's dependencies are read from pyproject.toml"
    )


def dockerignore_pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore glob as a regex: `*` and `?` stay inside one folder, `**/` spans any."""
    regex, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(glob[i], re.escape(glob[i])), i + 1
    return re.compile(regex)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        regex = dockerignore_pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return excluded


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args for keyword, args in dockerfile_instructions() if keyword in ("COPY", "ADD")]
    assert copies
    for args in copies:
        words = [w for w in args.split() if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in args.split()), "one stage: nothing copied from another"
        for source in words[:-1]:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            inside = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            files = [path] if path.is_file() else inside
            assert files, f"COPY {source}: nothing in it"
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                assert not dockerignore_excludes(rel, patterns), (
                    f"COPY {source}: .dockerignore leaves out {rel}"
                )
    # and the allow-list keeps what the build must not see
    for private in (
        ".venv/bin/python",
        ".git/config",
        "outputs/demo/demo.log",
        "seller_dist/__pycache__/cli.pyc",
    ):
        assert dockerignore_excludes(private, patterns), private


def test_runs_as_a_numeric_non_root_user_with_its_own_extensions_cache():
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), f"the image ends as USER {users[-1]!r}"
    env = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    m = re.search(r"TORCH_EXTENSIONS_DIR=(\S+)", env)
    assert m and m.group(1).startswith("/home/ray/"), "DeepSpeed's JIT cache in the user's own home"
    for folder, doc in manifests().items():
        pods = [node for node in walk(doc) if isinstance(node, dict) and "containers" in node]
        assert pods, folder
        for pod in pods:
            ctx = pod.get("securityContext", {})
            assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == int(uid), (folder, ctx)
            for container in pod["containers"]:
                assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False


def load_check_pins() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_pins", CLUSTER / "check_pins.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_builds_pin_check_names_each_unmet_requirement():
    check_pins = load_check_pins()
    installed = {"ray": "2.60.0", "torch": "2.13.0+cu130", "numpy": "1.25.0", "fsspec": "2026.9.0"}
    reqs = [
        "ray[default,train,data]==2.60.0",
        "torch>=2.4",
        "torch==2.13.0",  # launch.sh's pin: the CUDA build's local label still matches
        "numpy>=1.26",
        "fsspec==2026.9.0",
        "deepspeed==0.19.8",
        'pytest>=8; extra == "dev"',  # an extra: not in the image
    ]
    unmet = check_pins.unmet_requirements(reqs, installed.get)
    assert unmet == [
        "numpy: required >=1.26, installed 1.25.0",
        "deepspeed: required ==0.19.8, not installed",
    ]


# ------------------------------------------------------------------------------------- manifests
def test_manifests_run_the_pinned_ray_and_take_the_image_from_one_component():
    ray = pinned_ray_version()
    base = ray_base_image()
    for folder, doc in manifests().items():
        kustomization = load_yaml(CLUSTER / folder / "kustomization.yaml")
        assert kustomization["resources"] == [WORKLOADS[folder]], folder
        assert kustomization.get("components") == ["../image"], folder
        assert "images" not in kustomization, f"{folder}: the image is set in cluster/image only"
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert spec["rayVersion"] == ray, (
            f"{folder}: rayVersion {spec['rayVersion']}, pyproject.toml pins {ray}"
        )
        images = {c["name"]: c["image"] for c in containers(doc)}
        assert images and set(images.values()) == {PLACEHOLDER}, f"{folder}: {images}"
    tag = image_component()["newTag"]
    base_tag = f"{base['ray']}-py{base['py']}{base['minor']}-{base['platform']}"
    assert tag.endswith(f"-ray{base_tag}"), (
        f"cluster/image names tag {tag!r}: it should end with -ray{base_tag}, the Dockerfile's base "
        "(./launch.sh image tags VERSION-COMMIT-ray<base>)"
    )


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, version) -> openAPIV3Schema of the vendored KubeRay CRDs."""
    schemas = {}
    for name in ("ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml"):
        crd = load_yaml(CRD_DIR / name)
        for version in crd["spec"]["versions"]:
            schemas[(crd["spec"]["names"]["kind"], version["name"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(node: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare: the API server's strict field validation (kubectl's default)
    rejects them, and plain JSON Schema lets them through."""
    if isinstance(node, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        found = []
        for key, value in node.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None:
                found.append(f"{path}.{key}")
        return found
    if isinstance(node, list):
        return [
            f
            for i, value in enumerate(node)
            for f in unknown_fields(value, schema.get("items", {}), f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize("folder", list(WORKLOADS))
def test_manifest_validates_against_the_kuberay_crd(folder, crd_schemas):
    doc = rendered(manifests()[folder])
    group, version = doc["apiVersion"].split("/")
    assert group == "ray.io"
    schema = crd_schemas[(doc["kind"], version)]
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]
    assert errors == []
    assert unknown_fields(doc, schema) == []


def test_unknown_field_and_bad_value_are_caught(crd_schemas):
    """The validation above can fail: a misspelt field and a wrong type both show up."""
    doc = rendered(manifests()["train"])
    doc["spec"]["rayClusterSpec"]["authOption"] = {"mode": "token"}
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    schema = crd_schemas[("RayJob", "v1")]
    assert unknown_fields(doc, schema) == [".spec.rayClusterSpec.authOption"]
    assert any(
        "'two' is not of type 'integer'" in e.message
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    )


def test_manifests_pass_the_operators_own_checks():
    """What KubeRay v1.7.0's ValidateRayClusterSpec refuses and the schema allows: token auth before
    Ray 2.52.0, and a worker group without both replica bounds when autoscaling is off."""
    for folder, doc in manifests().items():
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert spec.get("authOptions", {}).get("mode") == "token", f"{folder}: Ray token auth on"
        major, minor, _ = (int(x) for x in spec["rayVersion"].split("."))
        assert (major, minor) >= (2, 52), f"{folder}: authOptions.mode=token needs Ray >= 2.52.0"
        if not spec.get("enableInTreeAutoscaling"):
            for group in spec["workerGroupSpecs"]:
                assert {"minReplicas", "maxReplicas"} <= group.keys(), f"{folder}: {group['groupName']}"
                assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], folder


def test_readme_installs_the_kuberay_version_the_crds_come_from():
    vendored = re.search(r"KubeRay v(\d+\.\d+\.\d+)", (CRD_DIR / "README.md").read_text())
    assert vendored
    readme = (CLUSTER / "README.md").read_text()
    installs = re.findall(r"helm install kuberay-operator kuberay/kuberay-operator --version (\S+)", readme)
    assert installs == [vendored.group(1)], installs


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed"
)
@pytest.mark.parametrize("folder", list(WORKLOADS))
def test_kubectl_kustomize_renders_the_component_image(folder):
    out = subprocess.run(
        ["kubectl", "kustomize", str(CLUSTER / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    doc = yaml.safe_load(out)
    assert doc == rendered(manifests()[folder])


# ------------------------------------------------------------------------------- ./launch.sh image
def run_launch_image(tmp_path: Path, engine: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SELLER_TORCH_VERSION", "SELLER_TORCH_INDEX_URL")}
    env |= {"SELLER_CONTAINER_ENGINE": engine, "ENGINE_LOG": str(tmp_path / "engine.log")}
    return subprocess.run(
        ["bash", str(REPO / "launch.sh"), "image", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_launch_image_without_a_container_engine_stops_with_one_line(tmp_path):
    proc = run_launch_image(tmp_path, "no-such-engine")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "neither docker nor podman" in proc.stderr


def test_launch_image_builds_with_launch_shs_torch_and_prints_the_deploy_lines(tmp_path):
    engine = tmp_path / "engine"
    engine.write_text('#!/bin/sh\necho "$*" >> "$ENGINE_LOG"\n')
    engine.chmod(0o755)
    proc = run_launch_image(tmp_path, str(engine))
    assert proc.returncode == 0, proc.stderr
    info, build = (tmp_path / "engine.log").read_text().splitlines()
    assert info == "info"
    base = ray_base_image()
    version = pyproject()["project"]["version"]
    m = re.fullmatch(
        r"build -f Dockerfile -t (\S+) --build-arg TORCH_VERSION=(\S+) --build-arg GIT_COMMIT=(\w+) \.", build
    )
    assert m, build
    ref, torch, commit = m.groups()
    assert torch == launch_sh_torch_version()
    assert re.fullmatch(
        rf"seller-dist:{re.escape(version)}-\w+-ray{base['ray']}-py3{base['minor']}-{base['platform']}", ref
    ), ref
    assert commit != "unknown"
    printed = proc.stdout
    assert f"push REGISTRY/{ref}" in printed
    applied = re.findall(r"kubectl apply -k (\S+)", printed)
    assert applied == ["cluster/train", "cluster/eval", "cluster/raycluster"]
    assert all((REPO / folder / "kustomization.yaml").is_file() for folder in applied)
    assert "ray job submit --address http://127.0.0.1:8265 -- python -m seller_dist.cli train" in printed

    proc = run_launch_image(tmp_path, str(engine), "registry.example/team/seller-dist:v1")
    assert proc.returncode == 0, proc.stderr
    assert "-t registry.example/team/seller-dist:v1 " in (tmp_path / "engine.log").read_text()
    assert "push registry.example/team/seller-dist:v1" in proc.stdout
    assert "kustomize edit set image seller-dist=registry.example/team/seller-dist:v1" in proc.stdout
