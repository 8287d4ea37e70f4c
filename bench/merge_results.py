#!/usr/bin/python3
"""Merges the JSON files of bench/compare.sh (DIR/{conv,ops,step}-{ours,torch}-ROUND.json) into
one markdown summary on stdout and DIR/merged.json. Per row and side the time is the smallest
of the per-round medians; ratios are speeds relative to ours: other_ms / ours_ms (> 1: we are
faster).

Usage: /usr/bin/python3 bench/merge_results.py DIR [--rounds 2]
"""
import argparse
import json
import math
import os
import statistics


def load(path):
    with open(path) as f:
        return json.load(f)


def best(docs, key, over_rounds=min):
    """Per row, `over_rounds` (the minimum unless told) of `key` over the rounds (None where every
    round has None)."""
    out = []
    for i in range(len(docs[0]['rows'])):
        values = [d['rows'][i].get(key) for d in docs if d['rows'][i].get(key) is not None]
        out.append(over_rounds(values) if values else None)
    return out


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def conv_min_bytes(g):
    """A conv pass's minimal memory traffic: its three tensors (input, weights, output, or their
    gradients) each read or written once, f32."""
    def out_extent(n):
        k, s, p, d = g['kernel'], g['stride'], g['pad'], g['dilation']
        if g['transposed']:
            return (n - 1) * s - 2 * p + d * (k - 1) + 1
        return (n + 2 * p - d * (k - 1) - 1) // s + 1
    v_in = g['D'] * g['H'] * g['W']
    v_out = out_extent(g['D']) * out_extent(g['H']) * out_extent(g['W'])
    return 4 * (g['N'] * g['C'] * v_in + g['N'] * g['K'] * v_out + g['K'] * g['C'] * g['kernel'] ** 3)


def fmt(v, digits=2):
    return '-' if v is None else f'{v:.{digits}f}'


def host_regimes(directory, rounds):
    """'conv 1 fast -> slow', ... for our runs that recorded the host's regime (bench/common.h)."""
    out = []
    for bench in ('conv', 'ops', 'step'):
        for r in rounds:
            path = f'{directory}/{bench}-ours-{r}.json'
            if not os.path.exists(path):
                continue
            d = load(path)
            start = d.get('machine', {}).get('host_regime') or d.get('host_regime', {}).get('before')
            end = d.get('host_regime_after') or d.get('host_regime', {}).get('after')
            if start and end:
                out.append(f"{bench} {r} {start['regime']} -> {end['regime']}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dir')
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args()
    rounds = range(1, a.rounds + 1)
    have = lambda name: all(os.path.exists(f'{a.dir}/{name}-{r}.json') for r in rounds)
    merged = {}
    lines = []
    if have('conv-ours') and have('conv-torch'):
        ours = [load(f'{a.dir}/conv-ours-{r}.json') for r in rounds]
        torch = [load(f'{a.dir}/conv-torch-{r}.json') for r in rounds]
        m = ours[0]['machine']
        lines += [f"Machine: {m['cpu']}, {m['threads']} threads: FMA peak {m['fma_peak_gflops']:.0f} GFLOP/s, "
                  f"Eigen sgemm {m['sgemm_gflops']:.0f} GFLOP/s, copy {m['copy_gbs']:.1f} GB/s; "
                  f"reference {ours[0]['reference']}, PyTorch {torch[0]['torch']}.", '',
                  f"### Conv passes ({ours[0]['scale']} scale), best of {a.rounds} rounds of "
                  f"{ours[0]['runs']}-run medians", '',
                  'Times are median / min of the timed runs in ms (each the best over the rounds); "vs" columns '
                  'are speeds relative to ours (other ms / ours ms, > 1: ours faster), from medians and from minima; '
                  '"paired" is the median over rounds of the median over runs of oneDNN ms / ours ms in the same '
                  'pair of back-to-back runs (one moment\'s host load: the steadiest of the three); '
                  'effective GFLOP/s and % of peak are from our minimum; "% peak native" is the same from the median '
                  'of ours in our own formats (below; the best over the rounds), where no layout conversion is timed: '
                  'a kernel\'s own efficiency (the line tiles\' NCDHW passes regroup their input at every call).', '',
                  '"plain paired" is the same against oneDNN on NCDHW in and out, its reorders timed; '
                  '"packed paired" against oneDNN in its formats with our weights packed in advance too '
                  '(where the direct kernels run fprop or dgrad; elsewhere the "paired" value); "native paired" with '
                  'ours in our own formats as well: the weights packed and, where the line tiles run the pass, the '
                  'activations in channel groups of 8, no conversion timed on either side (elsewhere the "packed '
                  'paired" value).', '',
                  '"hand-off x" is the host\'s regime just before the row in its most disturbed round: the time for a '
                  'thread to read a line the other has just written over one it wrote itself (bench/common.h; above 3 '
                  'the regime is slow and passes whose threads share data, the layout conversions among them, slow '
                  'down).', '',
                  '| layer | pass | shape | ours ms | oneDNN ms | PyTorch ms | ours eff GFLOP/s | % FMA peak '
                  '| % peak native | vs oneDNN | paired | plain paired | packed paired | native paired | vs PyTorch '
                  '| hand-off x |',
                  '|' + '---|' * 16]
        o_ms, o_min = best(ours, 'ours_ms'), best(ours, 'ours_min_ms')
        r_ms, r_min = best(ours, 'ref_ms'), best(ours, 'ref_min_ms')
        t_ms, t_min = best(torch, 'torch_ms'), best(torch, 'torch_min_ms')
        r_paired = best(ours, 'speed_vs_ref', statistics.median)
        plain = best(ours, 'speed_vs_ref_plain', statistics.median)  # None in results from before it
        packed = best(ours, 'speed_vs_ref_packed', statistics.median)  # likewise
        native = best(ours, 'speed_vs_ref_native', statistics.median)  # likewise
        handoff = best(ours, 'handoff_ratio', max)  # likewise
        native_ms = best(ours, 'ours_native_ms')  # likewise
        ratio = lambda a, b: a / b if a is not None and b else None
        rows, vs_ref, vs_torch, vs_ref_min, vs_torch_min, peak_shares, native_shares = [], [], [], [], [], [], []
        for i, row in enumerate(ours[0]['rows']):
            g = ours[0]['geometry'][i]
            eff = g['effective_flops'] / (o_min[i] / 1e3) / 1e9
            eff_native = g['effective_flops'] / (native_ms[i] / 1e3) / 1e9 if native_ms[i] else None
            peak_shares.append(eff / m['fma_peak_gflops'])
            native_shares.append(eff_native / m['fma_peak_gflops'] if eff_native else None)
            native_share = '-' if eff_native is None else f"{100 * native_shares[-1]:.0f}%"
            rr, rm = ratio(r_ms[i], o_ms[i]), ratio(r_min[i], o_min[i])
            tr, tm = ratio(t_ms[i], o_ms[i]), ratio(t_min[i], o_min[i])
            vs_ref.append(rr), vs_torch.append(tr), vs_ref_min.append(rm), vs_torch_min.append(tm)
            lines.append(f"| {row['layer']} | {row['pass']} | {row['shape']} | {fmt(o_ms[i], 2)} / {fmt(o_min[i], 2)} | "
                         f"{fmt(r_ms[i], 2)} / {fmt(r_min[i], 2)} | {fmt(t_ms[i], 2)} / {fmt(t_min[i], 2)} | {eff:.1f} | "
                         f"{100 * eff / m['fma_peak_gflops']:.0f}% | "
                         f"{native_share} | "
                         f"{fmt(rr)} / {fmt(rm)} | {fmt(r_paired[i])} | "
                         f"{fmt(plain[i])} | {fmt(packed[i])} | {fmt(native[i])} | {fmt(tr)} / {fmt(tm)} | "
                         f"{fmt(handoff[i], 1)} |")
            rows.append({'layer': row['layer'], 'pass': row['pass'], 'shape': row['shape'], 'ours_ms': o_ms[i],
                         'ours_min_ms': o_min[i], 'ours_effective_gflops_at_min': eff, 'onednn_ms': r_ms[i],
                         'onednn_min_ms': r_min[i], 'torch_ms': t_ms[i], 'torch_min_ms': t_min[i],
                         'speed_vs_onednn': rr, 'speed_vs_onednn_min': rm,
                         'speed_vs_onednn_paired': r_paired[i], 'speed_vs_onednn_plain_paired': plain[i],
                         'speed_vs_onednn_packed_paired': packed[i], 'speed_vs_onednn_native_paired': native[i],
                         'fma_peak_share_at_min': peak_shares[-1], 'fma_peak_share_native': native_shares[-1],
                         'speed_vs_torch': tr,
                         'speed_vs_torch_min': tm, 'handoff_ratio_highest': handoff[i]})
        lines += ['', f"Geometric mean speed (medians / minima): vs oneDNN {fmt(geomean(vs_ref))} / "
                  f"{fmt(geomean(vs_ref_min))}, vs PyTorch {fmt(geomean(vs_torch))} / {fmt(geomean(vs_torch_min))} "
                  f"(> 1: ours faster), vs oneDNN paired {fmt(geomean(r_paired))}; rows slower than oneDNN by "
                  f"> 10%: {sum(1 for v in vs_ref_min if v is not None and v < 0.9)} of {len(vs_ref_min)} by minima, "
                  f"{sum(1 for v in r_paired if v is not None and v < 0.9)} paired, "
                  f"{sum(1 for v in plain if v is not None and v < 0.9)} paired against plain-layout oneDNN "
                  f"(geometric mean {fmt(geomean(plain))}), {sum(1 for v in packed if v is not None and v < 0.9)} "
                  f"paired with our weights packed in advance (geometric mean {fmt(geomean(packed))}), "
                  f"{sum(1 for v in native if v is not None and v < 0.9)} paired with ours in our own formats "
                  f"(geometric mean {fmt(geomean(native))}). Rows below 70% of the FMA peak: "
                  f"{sum(1 for v in peak_shares if v < 0.7)} from our minimum, "
                  f"{sum(1 for v in native_shares if v is not None and v < 0.7)} in our own formats.", '']
        # Why a row is below 70%: where its FLOP per byte of minimal traffic is low, 70% of the peak
        # asks more bandwidth than the machine has.
        below = [i for i, v in enumerate(peak_shares) if v < 0.7]
        if below:
            lines += ['Rows below 70% of the FMA peak (from our minimum), with their minimal traffic (input, '
                      'weights and output each moved once) and the bandwidth that 70% of the peak would take:', '',
                      '| layer | pass | % FMA peak | MiB moved | FLOP / byte | ours GB/s | GB/s at 70% of peak '
                      '| x copy bandwidth |', '|' + '---|' * 8]
            for i in below:
                g, row = ours[0]['geometry'][i], ours[0]['rows'][i]
                moved = conv_min_bytes(g)
                intensity = g['effective_flops'] / moved
                need = 0.7 * m['fma_peak_gflops'] / intensity
                lines.append(f"| {row['layer']} | {row['pass']} | {100 * peak_shares[i]:.0f}% | {moved / 2**20:.1f} | "
                             f"{intensity:.1f} | {moved / (o_min[i] / 1e3) / 1e9:.1f} | {need:.0f} | "
                             f"{need / m['copy_gbs']:.1f} |")
            lines.append('')
        merged['conv'] = {'machine': m, 'rows': rows}
    if have('ops-ours') and have('ops-torch'):
        ours = [load(f'{a.dir}/ops-ours-{r}.json') for r in rounds]
        torch = [load(f'{a.dir}/ops-torch-{r}.json') for r in rounds]
        copy = ours[0]['machine']['copy_gbs']
        o_ms, t_ms = best(ours, 'ours_ms'), best(torch, 'torch_ms')
        o_min, t_min = best(ours, 'ours_min_ms'), best(torch, 'torch_min_ms')
        handoff = best(ours, 'handoff_ratio', max)  # None in results from before it
        lines += [f"### Memory-bound ops (copy bandwidth {copy:.1f} GB/s)", '',
                  'ms are median / min; GB/s and the PyTorch ratio (PyTorch ms / ours ms) from the medians; '
                  '"hand-off x": the host\'s regime just before the row, in its most disturbed round (as for conv).',
                  '',
                  '| op | shape | pass | ours ms | ours GB/s | % of copy | PyTorch ms | PyTorch GB/s | vs PyTorch '
                  '| hand-off x |',
                  '|' + '---|' * 10]
        rows = []
        for i, row in enumerate(ours[0]['rows']):
            b = ours[0]['geometry'][i]['bytes']
            gbs, tgbs = b / o_ms[i] / 1e6, b / t_ms[i] / 1e6
            lines.append(f"| {row['op']} | {row['shape']} | {row['pass']} | {o_ms[i]:.3f} / {o_min[i]:.3f} | {gbs:.1f} | "
                         f"{100 * gbs / copy:.0f}% | {t_ms[i]:.3f} / {t_min[i]:.3f} | {tgbs:.1f} | {t_ms[i] / o_ms[i]:.2f} | "
                         f"{fmt(handoff[i], 1)} |")
            rows.append({'op': row['op'], 'shape': row['shape'], 'pass': row['pass'], 'ours_ms': o_ms[i],
                         'ours_gbs': gbs, 'torch_ms': t_ms[i], 'torch_gbs': tgbs, 'handoff_ratio_highest': handoff[i]})
        lines.append('')
        merged['ops'] = {'copy_gbs': copy, 'rows': rows}
    if have('step-ours') and have('step-torch'):
        ours = [load(f'{a.dir}/step-ours-{r}.json') for r in rounds]
        torch = [load(f'{a.dir}/step-torch-{r}.json') for r in rounds]
        o, t = ours[0]['rows'][0], torch[0]['rows'][0]
        k = {key: (best(ours, key)[0], best(torch, key)[0])
             for key in ('step_ms', 'step_min_ms', 'forward_ms', 'backward_ms', 'update_ms', 'peak_rss_mib')}
        lines += [f"### Training step: {o['arch']} + {o['head']} head, input {o['input']}, SGD momentum 0.9, "
                  f"{ours[0]['threads']} threads", '',
                  '| | step ms (median) | step ms (min) | forward+loss ms | backward ms | update ms | peak RSS MiB |',
                  '|---|---|---|---|---|---|---|',
                  '| ours | ' + ' | '.join(f'{k[c][0]:.0f}' for c in k) + ' |',
                  '| PyTorch | ' + ' | '.join(f'{k[c][1]:.0f}' for c in k) + ' |', '',
                  f"Step speed vs PyTorch: {k['step_ms'][1] / k['step_ms'][0]:.2f}x from medians, "
                  f"{k['step_min_ms'][1] / k['step_min_ms'][0]:.2f}x from minima (> 1: ours faster); "
                  f"loss ours {o['loss']:.4f}, PyTorch {t['loss']:.4f} (different random init).", '']
        merged['step'] = {key: {'ours': v[0], 'torch': v[1]} for key, v in k.items()}
        merged['step'].update({'arch': o['arch'], 'head': o['head'], 'input': o['input']})
    regimes = host_regimes(a.dir, rounds)
    if regimes:
        lines += ['Host regime at the start and end of each of our runs ("slow": a line another thread has just '
                  'written costs more than 3x one\'s own to read, and every hand-off between our threads that much '
                  'more; bench/README.md): ' + '; '.join(regimes) + '.', '']
        merged['host_regimes'] = regimes
    with open(f'{a.dir}/merged.json', 'w') as f:
        json.dump(merged, f, indent=2)
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
