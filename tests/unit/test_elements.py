"""Element resolution, hook merging and ordering: DIB's contract (seed-build-spec §2.2, 2.3, 2.6, 2.7)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from conftest import make_element

from sles_ipa_builder.engine import elements, packages
from sles_ipa_builder.engine.elements import Element, merge, resolve, sort_key
from sles_ipa_builder.errors import ConfigError

OS = {"provides": ["operating-system"]}


def names(resolved: list[Element]) -> list[str]:
    return [e.name for e in resolved]


# --- resolution ------------------------------------------------------------------------------------
def test_dependency_chain_breadth_first_with_pulled_by(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS)
    make_element(tmp_path, "a", deps=["b", "c"])
    make_element(tmp_path, "b", deps=["d"])
    make_element(tmp_path, "c", deps=["d"])
    make_element(tmp_path, "d")
    got = resolve(["a", "os"], [tmp_path])
    assert names(got) == ["a", "os", "b", "c", "d"]
    by = {e.name: e.pulled_by for e in got}
    assert by == {"a": None, "os": None, "b": "a", "c": "a", "d": "b"}


def test_provided_element_is_not_in_the_result(tmp_path: Path) -> None:
    make_element(tmp_path, "sles", provides=["operating-system"], deps=["zypper-config"])
    make_element(tmp_path, "sles-zypper-config", provides=["zypper-config"])
    make_element(tmp_path, "app", deps=["sles-zypper-config"])
    got = names(resolve(["app", "sles"], [tmp_path]))
    assert "zypper-config" not in got and "operating-system" not in got
    assert set(got) == {"app", "sles", "sles-zypper-config"}


def test_missing_element_names_who_wanted_it(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["ghost"])
    with pytest.raises(ConfigError, match=r"Element 'ghost' not found \(a dependency of os\)") as e:
        resolve(["os"], [tmp_path])
    assert "ELEMENTS_PATH" in e.value.hint


def test_provided_twice(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS)
    make_element(tmp_path, "os2", **OS)
    with pytest.raises(ConfigError, match="provides 'operating-system' but it is already provided by 'os'"):
        resolve(["os", "os2"], [tmp_path])


def test_requested_element_also_provided(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["x"])
    make_element(tmp_path, "x", provides=["virt"])
    make_element(tmp_path, "virt")
    with pytest.raises(ConfigError, match="'virt' is already provided by 'x'"):
        resolve(["os", "virt"], [tmp_path])


def test_no_operating_system(tmp_path: Path) -> None:
    make_element(tmp_path, "a")
    with pytest.raises(ConfigError, match="Please include an operating system element"):
        resolve(["a"], [tmp_path])


def test_earlier_path_entry_wins_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second = tmp_path / "user", tmp_path / "builtin"
    make_element(first, "os", **OS)
    make_element(second, "os", deps=["never"])
    with caplog.at_level(logging.WARNING):
        got = resolve(["os"], [first, second])
    assert got[0].path == first / "os"
    assert "overridden" in caplog.text


def test_base_is_prepended_only_when_it_exists(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS)
    assert names(resolve(["os"], [tmp_path])) == ["os"]
    make_element(tmp_path, "base")
    assert names(resolve(["os"], [tmp_path])) == ["base", "os"]


def test_native_element_resolves_without_a_directory(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["package-installs"])
    got = resolve(["os"], [tmp_path])
    assert got[1].name == "package-installs" and got[1].path is None and got[1].native


def test_search_path_puts_user_dirs_before_builtin(tmp_path: Path) -> None:
    assert elements.search_path([tmp_path]) == [tmp_path, elements.BUILTIN_DIR]


# --- ordering --------------------------------------------------------------------------------------
def test_sort_like_lang_c_sort_n() -> None:
    got = sorted(["10-a", "9-b", "010-c", "a", "B", "1-x", "-2-neg", "10-A"], key=sort_key)
    # no number sorts as 0 (byte-wise among themselves); 010 == 10, ties byte-wise
    assert got == ["-2-neg", "B", "a", "1-x", "9-b", "010-c", "10-A", "10-a"]


def test_script_selection_and_order(tmp_path: Path) -> None:
    make_element(
        tmp_path,
        "os",
        **OS,
        files={
            "install.d/10-a": "#!/bin/sh\n",
            "install.d/9-b": "#!/bin/sh\n",
            "install.d/010-c": "#!/bin/sh\n",
            "install.d/a": "#!/bin/sh\n",
            "install.d/20-dotted.sh": "#!/bin/sh\n",
            "install.d/30-noexec": ("#!/bin/sh\n", 0o644),
            "install.d/40-subdir/inner": "#!/bin/sh\n",
            "install.d/50-link": ("->", "../bin/tool"),
            "install.d/60-dangling": ("->", "../bin/none"),
            "bin/tool": "#!/bin/sh\n",
        },
    )
    tree = merge(resolve(["os"], [tmp_path]), {})
    assert [s.name for s in tree.scripts("install.d")] == ["a", "9-b", "010-c", "10-a", "50-link"]


def test_environment_d_order_allows_dots(tmp_path: Path) -> None:
    make_element(
        tmp_path,
        "os",
        **OS,
        deps=["b"],
        files={
            "environment.d/10-os.bash": "export A=1\n",
            "environment.d/99-last": "export B=1\n",
        },
    )
    make_element(
        tmp_path, "b", files={"environment.d/10-b": "", "environment.d/2-x": "", "environment.d/.hid": ""}
    )
    tree = merge(resolve(["os"], [tmp_path]), {})
    rels = [r for r, _ in tree.env_files()]
    assert rels == [  # .hid: DIB merges `$(ls dir)`, which lists no dotfiles
        "environment.d/10-b",
        "environment.d/10-os.bash",
        "environment.d/11-dib-install-type.bash",
        "environment.d/2-x",
        "environment.d/99-last",
    ]


def test_duplicate_script_names_both_elements(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["b"], files={"install.d/50-x": "#!/bin/sh\n"})
    make_element(tmp_path, "b", files={"install.d/50-x": "#!/bin/sh\n"})
    with pytest.raises(ConfigError, match="50-x is in both os and b"):
        merge(resolve(["os"], [tmp_path]), {})


def test_nested_dirs_merge(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["b"], files={"static/etc/a": "a"})
    make_element(tmp_path, "b", files={"static/etc/b": "b"})
    tree = merge(resolve(["os"], [tmp_path]), {})
    assert set(tree.subtree("static")) == {"etc/a", "etc/b"}


def test_install_types_default_source(tmp_path: Path) -> None:
    make_element(
        tmp_path,
        "os",
        **OS,
        files={
            "install.d/app-source-install/60-app-install": "#!/bin/sh\n",
            "install.d/app-source-install/app.service": "[Unit]\n",
            "install.d/app-package-install/60-app-pkg": "#!/bin/sh\n",
        },
    )
    resolved = resolve(["os"], [tmp_path])
    tree = merge(resolved, {})
    assert [s.name for s in tree.scripts("install.d")] == ["60-app-install"]
    assert tree.links["install.d/app.service"] == "app-source-install/app.service"
    tree = merge(resolved, {"DIB_INSTALLTYPE_app": "package"})
    assert [s.name for s in tree.scripts("install.d")] == ["60-app-pkg"]
    out = tmp_path / "merged"
    tree.materialise(out)
    assert os.readlink(out / "install.d/60-app-pkg") == "app-package-install/60-app-pkg"
    assert os.access(out / "install.d/60-app-pkg", os.X_OK)


def test_install_type_variable_covers_its_exact_prefix_only(tmp_path: Path) -> None:
    # DIB_INSTALLTYPE_app picks app-<type>-install; app-agent-source-install has its own prefix.
    make_element(tmp_path, "os", **OS, files={
        "install.d/app-agent-source-install/60-agent": "#!/bin/sh\n",
        "install.d/app-package-install/60-app-pkg": "#!/bin/sh\n",
        "install.d/app-source-install/60-app-src": "#!/bin/sh\n",
    })
    tree = merge(resolve(["os"], [tmp_path]), {"DIB_INSTALLTYPE_app": "package"})
    assert [s.name for s in tree.scripts("install.d")] == ["60-agent", "60-app-pkg"]


def test_hidden_files_are_not_hooks(tmp_path: Path) -> None:
    # DIB copies <dir>/*: two elements' .gitkeep do not clash, a swap file is not sourced.
    make_element(tmp_path, "os", **OS, deps=["b"], files={"install.d/.gitkeep": "", "static/.gitkeep": "",
                                                         "environment.d/.10-x.swp": "garbage("})
    make_element(tmp_path, "b", files={"install.d/.gitkeep": "", "static/etc/.hidden-conf": "kept"})
    tree = merge(resolve(["os"], [tmp_path]), {})
    assert not [r for r in tree.files if r.rsplit("/", 1)[-1] in (".gitkeep", ".10-x.swp")]
    assert set(tree.subtree("static")) == {"etc/.hidden-conf"}  # deeper down, cp -a copies all
    assert [r for r, _ in tree.env_files()] == ["environment.d/11-dib-install-type.bash"]  # generated


def test_native_element_hooks_do_not_run(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, deps=["package-installs"])
    make_element(tmp_path, "package-installs", files={"install.d/01-package-installs": "#!/bin/sh\n"})
    tree = merge(resolve(["os"], [tmp_path]), {})
    assert tree.scripts("install.d") == []


# --- source-repository-* ---------------------------------------------------------------------------
def test_source_repositories_expand_and_override(tmp_path: Path) -> None:
    make_element(
        tmp_path,
        "os",
        **OS,
        files={
            "source-repository-ipa": "ironic-python-agent git /tmp/ironic-python-agent "
            "${IPA_URL} ${IPA_REF:-main}\n",
            "source-repository-lib": "# comment\nironic-lib\tgit  /tmp/ironic-lib   https://x/lib \n",
            "source-repository-old~": "ignored git /x http://y\n",
        },
    )
    env = {"IPA_URL": "https://x/ipa", "DIB_REPOREF_ironic_lib": "stable"}
    repos = elements.source_repos(resolve(["os"], [tmp_path]), env)
    assert repos == [
        elements.SourceRepo(
            "ironic-python-agent", "git", "/tmp/ironic-python-agent", "https://x/ipa", "main", "os"
        ),
        elements.SourceRepo("ironic-lib", "git", "/tmp/ironic-lib", "https://x/lib", "stable", "os"),
    ]
    env["DIB_REPOLOCATION_ironic_python_agent"] = "file:///mirror/ipa"
    env["DIB_INSTALLTYPE_ironic_lib"] = "package"
    repos = elements.source_repos(resolve(["os"], [tmp_path]), env)
    assert [(r.name, r.location) for r in repos] == [("ironic-python-agent", "file:///mirror/ipa")]


def test_source_repository_bad_line(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, files={"source-repository-x": "x svn /tmp/x http://y\n"})
    with pytest.raises(ConfigError, match="cannot parse"):
        elements.source_repos(resolve(["os"], [tmp_path]), {})


# --- package-installs ------------------------------------------------------------------------------
PKGS = """
curl:
gcc:
  build-only: true
early:
  phase: pre-install.d
gone:
  uninstall: true
  phase: post-install.d
only-arm:
  arch: arm64
not-arm:
  not-arch: arm64, ppc64
when-yes:
  when: DIB_FLAG=on
when-no:
  when: DIB_FLAG!=on
from-package:
  installtype: package
iscsi_package:
"""


def test_package_installs_filters(tmp_path: Path) -> None:
    make_element(
        tmp_path,
        "os",
        **OS,
        files={
            "package-installs.yaml": PKGS,
            "pkg-map": '{"family": {"suse": {"iscsi_package": "open-iscsi"}}, "default": {"curl": "curl"},'
            ' "distro": {"debian": {"curl": "nope"}}}',
        },
    )
    env = {"ARCH": "amd64", "DIB_FLAG": "on", "DISTRO_NAME": "opensuse"}
    got = packages.collect(resolve(["os"], [tmp_path]), env)
    assert got.get("install.d", False) == ["curl", "gcc", "not-arm", "when-yes", "open-iscsi"]
    assert got.get("install.d", True) == ["gcc"]
    assert got.get("pre-install.d", False) == ["early"]
    assert got.get("post-install.d", True) == ["gone"]
    assert got.get("post-install.d", False) == []


def test_package_installs_when_unset_variable_is_an_error(tmp_path: Path) -> None:
    make_element(tmp_path, "os", **OS, files={"package-installs.yaml": "x:\n  when: DIB_NOPE=1\n"})
    with pytest.raises(ConfigError, match="'DIB_NOPE' .* is not set"):
        packages.collect(resolve(["os"], [tmp_path]), {"ARCH": "amd64"})


def test_package_installs_json_and_arch_conflict(tmp_path: Path) -> None:
    make_element(
        tmp_path, "os", **OS, files={"package-installs.json": '{"a": {"arch": "x", "not-arch": "y"}}'}
    )
    with pytest.raises(ConfigError, match="both arch and not-arch"):
        packages.collect(resolve(["os"], [tmp_path]), {"ARCH": "amd64"})


def test_pkg_map_precedence_and_empty_drop() -> None:
    m = {
        "default": {"a": "a-default", "drop": ""},
        "family": {"suse": {"a": "a-suse"}},
        "distro": {"opensuse": {"b": "b-os"}},
        "release": {"opensuse": {"15.4": {"b": "b-154 b-extra"}}},
    }
    assert packages.map_names(m, ["a", "b", "drop", "c"], "opensuse", "15.4") == [
        "a-suse",
        "b-154",
        "b-extra",
        "c",
    ]
    assert packages.map_names(m, ["a", "b"], "opensuse", "15.5") == ["a-suse", "b-os"]
    assert packages.map_names(None, ["x"], "opensuse", "") == ["x"]


def test_package_installs_json_and_yaml_both_count_and_build_only_wins(tmp_path: Path) -> None:
    # DIB's squash reads package-installs.json, then .yaml; build-only beats uninstall
    make_element(tmp_path, "os", **OS, files={
        "package-installs.json": '{"from-json": null}',
        "package-installs.yaml": "from-yaml:\nboth-flags:\n  build-only: true\n  uninstall: true\n",
    })
    got = packages.collect(resolve(["os"], [tmp_path]), {"ARCH": "amd64"})
    assert got.get("install.d", False) == ["from-json", "from-yaml", "both-flags"]
    assert got.get("install.d", True) == ["both-flags"]
