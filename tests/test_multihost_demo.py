"""``avm demo --hosts 3``: three host processes start, print their web pages, and
messages cross between them: the counter on host 0 answers the other hosts' asks, the
bank on host 1 takes transfers from the others, and Ctrl-C (SIGTERM) stops them all
cleanly (issue 8, item 7)."""

from __future__ import annotations

import re
import signal

from test_multihost_cli import Proc


def test_demo_on_three_hosts_sends_messages_across_them(tmp_path):
    demo = Proc("demo", "--hosts", "3", "--dir", str(tmp_path / "d"), cwd=tmp_path)
    try:
        pages = {}
        for _ in range(3):
            line = demo.wait_for("web page http://127.0.0.1:")
            pages[line.split(":")[0]] = re.search(r"web page (\S+)", line).group(1)
        assert set(pages) == {"host 0", "host 1", "host 2"} and len(set(pages.values())) == 3
        # hosts 1 and 2 hear the counter of host 0 answer; host 1's bank gets transfers
        want = {"host 1": False, "host 2": False}
        bank_in = False
        while not (all(want.values()) and bank_in):
            line = demo.wait_for("wire:")
            who = line.split(":")[0]
            if "remote counter says ('count'," in line and who in want:
                want[who] = True
            if who == "host 1":
                got = int(re.search(r"received (\d+)", line).group(1))
                assert "bank total 250 (always 250)" in line
                bank_in = bank_in or got > 0
        demo.p.send_signal(signal.SIGTERM)
        end = demo.wait_for("hosts stopped")
        assert "exit codes [0, 0, 0]" in end, demo.seen
        assert demo.p.wait(timeout=60) == 0
        stopped = [s for s in demo.seen if "stopped; everything is committed" in s]
        assert len(stopped) == 3
    finally:
        demo.stop()
