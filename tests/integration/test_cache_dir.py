"""Where the cache lives: --cache-dir, else $LAZYROOT_CACHE_DIR, else /var/cache/lazyroot for
root; it is private (0700) and its index is SQLite in WAL mode."""

import os
import stat

from conftest import mounts_under
from helpers import sqlite


def _mount_umount(lazyroot, registry, mountpoint, *args, env=None):
    r = lazyroot.run("mount", registry.ref("demo"), str(mountpoint), *args, env=env)
    assert r.ok, str(r)
    assert (mountpoint / "etc" / "os-release").is_file()
    u = lazyroot.umount(mountpoint)
    assert u.ok, str(u)


def test_env_var_names_the_cache(lazyroot, registry, test_dir, mountpoint):
    env_cache = test_dir / "from-env"
    _mount_umount(lazyroot, registry, mountpoint, env={"LAZYROOT_CACHE_DIR": str(env_cache)})
    assert (env_cache / "index.db").is_file()
    assert any((env_cache / "blobs").rglob("*")), "no blobs in the env-named cache"
    assert not mounts_under(test_dir)


def test_option_wins_over_env_var(lazyroot, registry, test_dir, mountpoint):
    env_cache, opt_cache = test_dir / "from-env", test_dir / "from-option"
    _mount_umount(lazyroot, registry, mountpoint, "--cache-dir", str(opt_cache),
                  env={"LAZYROOT_CACHE_DIR": str(env_cache)})
    assert (opt_cache / "index.db").is_file()
    assert not env_cache.exists()


def test_cache_is_private_and_wal(lazyroot, registry, test_dir, mountpoint):
    cache = test_dir / "private"
    _mount_umount(lazyroot, registry, mountpoint, "--cache-dir", str(cache))
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache / "index.db").st_mode) == 0o600
    for p in (cache / "blobs").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p
    assert sqlite(cache / "index.db", "PRAGMA journal_mode")[0][0] == "wal"
