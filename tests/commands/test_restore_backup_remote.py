"""`restore_backup --from-remote` and `--private-key`: a backup back from the off-site copy on a
real OpenSSH server (tests/sshd.py) when the machine's own file is gone, and an encrypted one
decrypted with the private key the server does not hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.restoring import step_names


def off_site(sshd, folder: Path) -> dict[str, str]:
    return {
        "DBOPS_BACKUP_REMOTE_URL": f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{folder}",
        "DBOPS_BACKUP_REMOTE_KEY_FILE": str(sshd.client_key),
        "DBOPS_BACKUP_REMOTE_KNOWN_HOSTS": str(sshd.known_hosts),
    }


def record_of(site, filename: str) -> dict:
    row = site.value(
        "SELECT json_build_object('remote_copy', remote_copy, 'encrypted', encrypted) "
        f"FROM dbops_backuprecord WHERE filename = '{filename}'"
    )
    return json.loads(row)


def test_the_off_site_copy_is_restored_and_swapped_in_when_the_local_file_is_lost(
    site, sshd, tmp_path
):
    site.env.update(off_site(sshd, tmp_path / "off-site"))
    filename = site.backup()
    assert record_of(site, filename)["remote_copy"] == "copied"
    backup_dir = Path(site.env["DBOPS_BACKUP_DIR"])
    (backup_dir / filename).unlink()  # the machine's own copy is gone
    site.sql("DELETE FROM caloria_foodentry WHERE id IN (SELECT id FROM caloria_foodentry LIMIT 5)")

    local = site.manage("restore_backup", filename)
    remote = site.manage("restore_backup", filename, "--from-remote", "--swap", "--noinput")

    assert local.returncode == 1
    assert f"failed at file: {backup_dir / filename} is missing" in local.stderr
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert site.foods() == 12
    failed_run, run = site.runs()
    assert run["status"] == "succeeded"
    assert run["from_remote"] is True and failed_run["from_remote"] is False
    assert "file: the off-site copy (sftp://" in remote.stdout
    assert "sha256 matches the record" in run["steps"][0]["detail"]
    assert [path.name for path in backup_dir.iterdir() if path.name.startswith(".dbops")] == []


def test_an_encrypted_backup_is_restored_only_with_its_private_key(site, gpg_keys):
    site.env.update(
        DBOPS_BACKUP_ENCRYPT="true",
        DBOPS_BACKUP_GPG_PUBLIC_KEY=str(gpg_keys["backups"].public_key),
    )
    filename = site.backup()
    assert record_of(site, filename)["encrypted"] is True

    no_key = site.manage("restore_backup", filename)
    wrong_key = site.manage(
        "restore_backup", filename, "--private-key", str(gpg_keys["other"].private_key)
    )
    assert no_key.returncode == wrong_key.returncode == 1
    assert "give the private key file (--private-key FILE)" in no_key.stderr
    assert "failed at file: " in wrong_key.stderr
    assert site.databases() == {site.live}  # nothing restored
    assert "BEGIN PGP PRIVATE KEY" not in no_key.stderr + wrong_key.stderr

    right_key = site.manage(
        "restore_backup", filename, "--private-key", str(gpg_keys["backups"].private_key)
    )

    assert right_key.returncode == 0, right_key.stdout + right_key.stderr
    run = site.runs()[-1]
    assert run["status"] == "succeeded"
    assert "sha256 matches the record, decrypted" in run["steps"][0]["detail"]
    assert ("rows", "passed") in step_names(run)
    assert site.foods(run["restored"]) == 12


def test_a_private_key_with_a_passphrase_decrypts_with_its_passphrase_file(
    site, gpg_keys, tmp_path
):
    from tests.gpg_keys import PASSPHRASE

    site.env.update(
        DBOPS_BACKUP_ENCRYPT="true",
        DBOPS_BACKUP_GPG_PUBLIC_KEY=str(gpg_keys["protected"].public_key),
    )
    filename = site.backup()
    key = str(gpg_keys["protected"].private_key)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")

    without = site.manage("restore_backup", filename, "--private-key", key)
    done = site.manage(
        "restore_backup", filename, "--private-key", key, "--passphrase-file", str(passphrase_file)
    )

    assert without.returncode == 1
    assert done.returncode == 0, done.stdout + done.stderr
    assert PASSPHRASE not in without.stdout + without.stderr + done.stdout + done.stderr
    assert PASSPHRASE not in json.dumps(site.runs())
