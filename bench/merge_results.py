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


def load(path):
    with open(path) as f:
        return json.load(f)


def best(docs, key):
    """Per row, the minimum over rounds of `key` (None where every round has None)."""
    out = []
    for i in range(len(docs[0]['rows'])):
        values = [d['rows'][i].get(key) for d in docs if d['rows'][i].get(key) is not None]
        out.append(min(values) if values else None)
    return out


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def fmt(v, digits=2):
    return '-' if v is None else f'{v:.{digits}f}'


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
                  '| layer | pass | shape | ours ms | ours eff GFLOP/s | eff % of FMA peak | oneDNN ms | PyTorch ms '
                  '| vs oneDNN | vs PyTorch |', '|' + '---|' * 10]
        o_ms, r_ms, t_ms = best(ours, 'ours_ms'), best(ours, 'ref_ms'), best(torch, 'torch_ms')
        rows, vs_ref, vs_torch = [], [], []
        for i, row in enumerate(ours[0]['rows']):
            g = ours[0]['geometry'][i]
            eff = g['effective_flops'] / (o_ms[i] / 1e3) / 1e9
            rr = r_ms[i] / o_ms[i] if r_ms[i] else None
            tr = t_ms[i] / o_ms[i]
            vs_ref.append(rr), vs_torch.append(tr)
            lines.append(f"| {row['layer']} | {row['pass']} | {row['shape']} | {fmt(o_ms[i], 3)} | {eff:.1f} | "
                         f"{100 * eff / m['fma_peak_gflops']:.0f}% | {fmt(r_ms[i], 3)} | {fmt(t_ms[i], 3)} | "
                         f"{fmt(rr)} | {fmt(tr)} |")
            rows.append({'layer': row['layer'], 'pass': row['pass'], 'shape': row['shape'], 'ours_ms': o_ms[i],
                         'ours_effective_gflops': eff, 'onednn_ms': r_ms[i], 'torch_ms': t_ms[i],
                         'speed_vs_onednn': rr, 'speed_vs_torch': tr})
        lines += ['', f"Geometric mean speed: vs oneDNN {fmt(geomean(vs_ref))}, vs PyTorch {fmt(geomean(vs_torch))} "
                  f"(> 1: ours faster); rows slower than oneDNN by > 10%: "
                  f"{sum(1 for v in vs_ref if v is not None and v < 0.9)} of {len(vs_ref)}.", '']
        merged['conv'] = {'machine': m, 'rows': rows}
    if have('ops-ours') and have('ops-torch'):
        ours = [load(f'{a.dir}/ops-ours-{r}.json') for r in rounds]
        torch = [load(f'{a.dir}/ops-torch-{r}.json') for r in rounds]
        copy = ours[0]['machine']['copy_gbs']
        o_ms, t_ms = best(ours, 'ours_ms'), best(torch, 'torch_ms')
        lines += [f"### Memory-bound ops (copy bandwidth {copy:.1f} GB/s)", '',
                  '| op | shape | pass | ours ms | ours GB/s | % of copy | PyTorch ms | PyTorch GB/s | vs PyTorch |',
                  '|' + '---|' * 9]
        rows = []
        for i, row in enumerate(ours[0]['rows']):
            b = ours[0]['geometry'][i]['bytes']
            gbs, tgbs = b / o_ms[i] / 1e6, b / t_ms[i] / 1e6
            lines.append(f"| {row['op']} | {row['shape']} | {row['pass']} | {o_ms[i]:.3f} | {gbs:.1f} | "
                         f"{100 * gbs / copy:.0f}% | {t_ms[i]:.3f} | {tgbs:.1f} | {t_ms[i] / o_ms[i]:.2f} |")
            rows.append({'op': row['op'], 'shape': row['shape'], 'pass': row['pass'], 'ours_ms': o_ms[i],
                         'ours_gbs': gbs, 'torch_ms': t_ms[i], 'torch_gbs': tgbs})
        lines.append('')
        merged['ops'] = {'copy_gbs': copy, 'rows': rows}
    if have('step-ours') and have('step-torch'):
        ours = [load(f'{a.dir}/step-ours-{r}.json') for r in rounds]
        torch = [load(f'{a.dir}/step-torch-{r}.json') for r in rounds]
        o, t = ours[0]['rows'][0], torch[0]['rows'][0]
        k = {key: (best(ours, key)[0], best(torch, key)[0])
             for key in ('step_ms', 'forward_ms', 'backward_ms', 'update_ms', 'peak_rss_mib')}
        lines += [f"### Training step: {o['arch']} + {o['head']} head, input {o['input']}, SGD momentum 0.9, "
                  f"{ours[0]['threads']} threads", '',
                  '| | step ms | forward+loss ms | backward ms | update ms | peak RSS MiB |', '|---|---|---|---|---|---|',
                  '| ours | ' + ' | '.join(f'{k[c][0]:.0f}' for c in k) + ' |',
                  '| PyTorch | ' + ' | '.join(f'{k[c][1]:.0f}' for c in k) + ' |', '',
                  f"Step speed vs PyTorch: {k['step_ms'][1] / k['step_ms'][0]:.2f}x (> 1: ours faster); "
                  f"loss ours {o['loss']:.4f}, PyTorch {t['loss']:.4f} (different random init).", '']
        merged['step'] = {key: {'ours': v[0], 'torch': v[1]} for key, v in k.items()}
        merged['step'].update({'arch': o['arch'], 'head': o['head'], 'input': o['input']})
    with open(f'{a.dir}/merged.json', 'w') as f:
        json.dump(merged, f, indent=2)
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
