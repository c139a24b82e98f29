"""Issue #23 item 5: two ``revert`` runs on one CaImAn file. The loser used to check the backup (there), then read
the file (already restored by the winner, so without a record) and exit 1 with a false "carries no roicurate
record … move the backup away". The interleaving is injected, not left to luck: the loser's first look at the file
(``inspect``) runs the winner's whole revert first, whenever the lock on the folder is free at that moment (the
loser is still outside its critical section); where the loser already holds the lock, the winner runs after it."""
import fcntl
import os

import pytest
from conftest import tree_hashes

from roicurate import RoicurateError
from roicurate.safeio import NothingToRevert
from roicurate_plugins.caiman import CaimanSource
from roicurate_plugins.caiman import write as caiman_write
from test_reruns import curate_caiman

src = CaimanSource()


def lock_is_free(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_concurrent_revert_loser_says_nothing_to_revert(copy_caiman, monkeypatch):
    path = copy_caiman("evaluated")
    before = tree_hashes(path.parent)
    curate_caiman(path)
    real_inspect = caiman_write.inspect
    winner = []

    def inspect_after_the_winner(p):
        if not winner and lock_is_free(path.parent):        # the loser is between its checks, outside the lock
            monkeypatch.setattr(caiman_write, "inspect", real_inspect)
            winner.append(src.revert(path))                 # the other run restores the file and removes the backup
            monkeypatch.setattr(caiman_write, "inspect", inspect_after_the_winner)
        return real_inspect(p)
    monkeypatch.setattr(caiman_write, "inspect", inspect_after_the_winner)
    try:
        loser = src.revert(path)
    except NothingToRevert as e:                          # exit 0 in the CLI
        loser = str(e)
    except RoicurateError as e:
        pytest.fail(f"the losing revert failed: {e}")
    if not winner:                                        # the loser held the lock: the other run comes second
        monkeypatch.setattr(caiman_write, "inspect", real_inspect)
        with pytest.raises(NothingToRevert) as e:
            src.revert(path)
        winner.append(loser)
        loser = str(e.value)
    assert "restored from" in winner[0]
    assert "nothing to revert" in loser and "carries no roicurate record" not in loser, loser
    assert tree_hashes(path.parent) == before
