#!/usr/bin/env python3
"""Does RECORDED carry the speech of REFERENCE? Standard library only (runs on a bare CI machine).

Usage: scripts/speech_match.py REFERENCE.wav RECORDED.wav [--from SECONDS] [--min R]

Both files mono 16-bit PCM at the same rate (qvoice writes its output WAV at the input WAV's rate).
Compares the 10 ms RMS envelopes (log energy) of REFERENCE from --from seconds to its end against
RECORDED at every lag within +-1.5 s, and prints the best Pearson correlation and its lag. Silence,
noise or another utterance scores near 0; the same speech through Opus and a network scores > 0.9.
Exit status 0 when the best correlation is at least --min (default 0.8), 1 otherwise, 2 on bad input.
"""
import math
import struct
import sys
import wave


def envelope(path, hop_s=0.01):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit(f"{path}: need mono 16-bit PCM")
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)
    hop = int(rate * hop_s)
    env = []
    for i in range(0, len(samples) - hop + 1, hop):
        block = samples[i:i + hop]
        energy = sum(s * s for s in block) / hop
        env.append(math.log10(energy + 1.0))
    return rate, env


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return 0.0
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / math.sqrt(va * vb)


def main():
    args = sys.argv[1:]
    start_s, min_r = 0.0, 0.8
    if "--from" in args:
        i = args.index("--from")
        start_s = float(args[i + 1])
        del args[i:i + 2]
    if "--min" in args:
        i = args.index("--min")
        min_r = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rate_r, ref = envelope(args[0])
    rate_o, out = envelope(args[1])
    if rate_r != rate_o:
        sys.exit(f"sample rates differ: {rate_r} vs {rate_o}")
    first = int(start_s * 100)
    window = ref[first:]
    if len(window) < 50:
        sys.exit("reference window shorter than 0.5 s")
    best, best_lag = -1.0, 0
    for lag in range(-150, 151):
        lo = first + lag
        if lo < 0 or lo + len(window) > len(out):
            continue
        r = pearson(window, out[lo:lo + len(window)])
        if r > best:
            best, best_lag = r, lag
    print(f"correlation {best:.3f} at lag {best_lag * 10} ms")
    sys.exit(0 if best >= min_r else 1)


if __name__ == "__main__":
    main()
