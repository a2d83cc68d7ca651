#!/usr/bin/env python3
"""Does RECORDED carry the speech of REFERENCE? Standard library only (runs on a bare CI machine).

Usage: scripts/speech_match.py REFERENCE.wav RECORDED.wav [--from SECONDS] [--len SECONDS] [--max-lag SECONDS] [--min R]

Both files mono 16-bit PCM at the same rate (qvoice writes its output WAV at the input WAV's rate).
Compares the 20 ms log-energy envelopes of REFERENCE (from --from seconds, for --len seconds or to its end)
and RECORDED: the best Pearson correlation over lags within +-max-lag (default 1.5 s; 20 ms frames tolerate
the frame-sized shifts of an adaptive jitter buffer). A caller's file input starts when the media path comes
up (after about 2.5 s on a relayed call), so that is where the reference begins in RECORDED. Prints it and its lag. Silence, noise or another
utterance scores near 0; the same speech through Opus and a network scores > 0.9.
Exit status 0 when the score is at least --min (default 0.6; time-reversed speech scores ~0.4, noise ~0.2), 1 otherwise, 2 on bad input.
"""
import math
import struct
import sys
import wave


def envelope(path, hop_s=0.02):
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
    start_s, min_r, len_s, max_lag_s = 0.0, 0.6, None, 1.5
    if "--len" in args:
        i = args.index("--len")
        len_s = float(args[i + 1])
        del args[i:i + 2]
    if "--max-lag" in args:
        i = args.index("--max-lag")
        max_lag_s = float(args[i + 1])
        del args[i:i + 2]
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
    hop = 50  # envelope frames per second
    first = int(start_s * hop)
    window = ref[first:] if len_s is None else ref[first:first + int(len_s * hop)]
    if len(window) < hop:
        sys.exit("reference window shorter than 1 s")

    def best_lag(seg, start, lags):
        best, best_l = -1.0, 0
        for lag in lags:
            lo = start + lag
            if lo < 0 or lo + len(seg) > len(out):
                continue
            r = pearson(seg, out[lo:lo + len(seg)])
            if r > best:
                best, best_l = r, lag
        return best, best_l

    max_lag = int(max_lag_s * hop)
    score, lag = best_lag(window, first, range(-max_lag, max_lag + 1))
    print(f"correlation {score:.3f} at lag {lag * 1000 // hop} ms")
    sys.exit(0 if score >= min_r else 1)


if __name__ == "__main__":
    main()
