#!/usr/bin/env python3
"""Mouth-to-ear delay from a 2-channel recording made on one JACK clock: channel 0 is the speech fed into
the caller's capture port, channel 1 the callee's playback port. Prints the delay per 2 s window of speech
(coarse search on 2 kHz envelopes, refined at 8 kHz), then min/median/max, the drift from the first to the
last window, and the correlation at the best lag. Pure Python (no numpy): decimates with sox first.

    python3 scripts/device_latency.py rec.wav
"""
import array
import statistics
import subprocess
import sys


def load(path, ch, rate):
    raw = subprocess.run(["sox", path, "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(rate), "-",
                          "remix", str(ch + 1)], check=True, capture_output=True).stdout
    a = array.array("h")
    a.frombytes(raw)
    return [float(x) for x in a]


def ncc(a, b):
    ab = sum(x * y for x, y in zip(a, b))
    aa = sum(x * x for x in a)
    bb = sum(y * y for y in b)
    return ab / (aa * bb) ** 0.5 if aa > 0 and bb > 0 else 0.0


def main():
    path = sys.argv[1]
    fed8, out8 = load(path, 0, 8000), load(path, 1, 8000)
    fed2 = [sum(fed8[i:i + 4]) for i in range(0, len(fed8) - 3, 4)]
    out2 = [sum(out8[i:i + 4]) for i in range(0, len(out8) - 3, 4)]
    win2, max_lag2 = 4000, 1000  # 2 s windows, delays up to 500 ms
    delays, corrs = [], []
    for w in range(0, len(fed2) - win2 - max_lag2, win2):
        seg = fed2[w:w + win2]
        if sum(x * x for x in seg) / win2 < (4 * 1500.0) ** 2:  # skip windows without speech
            continue
        best = max(range(max_lag2), key=lambda l: ncc(seg, out2[w + l:w + l + win2]))
        s8 = fed8[w * 4:w * 4 + win2 * 4]
        lag, c = max(((l, ncc(s8, out8[w * 4 + l:w * 4 + l + len(s8)])) for l in range(max(0, best * 4 - 8), best * 4 + 8)),
                     key=lambda t: t[1])
        delays.append(lag / 8.0)
        corrs.append(c)
        print(f"t={w / 2000:6.1f} s  delay {lag / 8.0:6.1f} ms  corr {c:.3f}")
    if not delays:
        sys.exit("no speech found in channel 0")
    print(f"windows {len(delays)}  delay min {min(delays):.1f} median {statistics.median(delays):.1f} "
          f"max {max(delays):.1f} ms  first->last {delays[-1] - delays[0]:+.1f} ms  "
          f"corr median {statistics.median(corrs):.3f}")


main()
