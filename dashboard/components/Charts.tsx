'use client';
// Charts as plain SVG: stacked bars over time and horizontal bars for a breakdown.
// Each chart has a <title> per mark (hover) and its numbers in a table for screen readers.

export interface Series {
  key: string;
  label: string;
  color: string;
}
export interface StackedPoint {
  label: string; // the x value, e.g. "Nov 28 14:00"
  values: Record<string, number>; // series key -> value
}

const W = 960;
const H = 260;
const PAD = { left: 72, right: 12, top: 12, bottom: 36 };
const TICKS = 5;

/** A round axis maximum (1, 2, 5 or 10 x a power of ten) whose fifths are round too. */
function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  const m = v / p;
  const step = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
  return step * p;
}



export function StackedBars({
  points,
  series,
  format,
  formatTick,
  title,
}: {
  points: StackedPoint[];
  series: Series[];
  format: (v: number) => string;
  /** The axis labels, given the value and the spacing of the ticks (to choose decimals). */
  formatTick: (v: number, step: number) => string;
  title: string;
}) {
  const totals = points.map((p) => series.reduce((s, x) => s + (p.values[x.key] ?? 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const slot = innerW / Math.max(1, points.length);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const labelEvery = Math.max(1, Math.ceil(points.length / 8));
  const y = (v: number) => PAD.top + innerH - (v / max) * innerH;
  const step = max / TICKS;
  const ticks = Array.from({ length: TICKS + 1 }, (_, i) => i * step);

  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title} preserveAspectRatio="xMidYMid meet">
        {ticks.map((t) => (
          <g key={t}>
            <line x1={PAD.left} x2={W - PAD.right} y1={y(t)} y2={y(t)} className="grid" />
            <text x={PAD.left - 6} y={y(t) + 4} textAnchor="end" className="axis">
              {formatTick(t, step)}
            </text>
          </g>
        ))}
        {points.map((p, i) => {
          const x = PAD.left + i * slot + (slot - barW) / 2;
          let acc = 0;
          return (
            <g key={p.label + i}>
              {series.map((s) => {
                const v = p.values[s.key] ?? 0;
                if (v <= 0) return null;
                const top = y(acc + v);
                const h = y(acc) - top;
                acc += v;
                return (
                  <rect key={s.key} x={x} y={top} width={barW} height={Math.max(1, h)} fill={s.color}>
                    <title>{`${p.label} · ${s.label}: ${format(v)}`}</title>
                  </rect>
                );
              })}
              {i % labelEvery === 0 ? (
                <text x={x + barW / 2} y={H - PAD.bottom + 16} textAnchor="middle" className="axis">
                  {p.label}
                </text>
              ) : null}
            </g>
          );
        })}
        <line x1={PAD.left} x2={W - PAD.right} y1={y(0)} y2={y(0)} className="baseline" />
      </svg>
      <figcaption className="legend">
        {series.map((s) => (
          <span key={s.key}>
            <i style={{ background: s.color }} aria-hidden="true" /> {s.label}
          </span>
        ))}
      </figcaption>
      <details className="chart-data">
        <summary>Data</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              {series.map((s) => (
                <th scope="col" key={s.key}>
                  {s.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {points.map((p, i) => (
              <tr key={p.label + i}>
                <td>{p.label}</td>
                {series.map((s) => (
                  <td key={s.key}>{format(p.values[s.key] ?? 0)}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

export function HBars({
  rows,
  title,
}: {
  rows: { label: string; value: number; display: string; color?: string }[];
  title: string;
}) {
  const max = Math.max(0, ...rows.map((r) => r.value)) || 1;
  const rowH = 28;
  const labelW = 130;
  const valueW = 110;
  const barMax = W - labelW - valueW;
  return (
    <svg
      className="hbars"
      viewBox={`0 0 ${W} ${rows.length * rowH + 4}`}
      role="img"
      aria-label={`${title}: ${rows.map((r) => `${r.label} ${r.display}`).join(', ')}`}
    >
      {rows.map((r, i) => {
        const w = (r.value / max) * barMax;
        const yy = i * rowH + 4;
        return (
          <g key={r.label}>
            <text x={0} y={yy + 15} className="axis hbar-label">
              {r.label}
            </text>
            <rect x={labelW} y={yy} width={Math.max(r.value > 0 ? 2 : 0, w)} height={rowH - 10} rx={3} fill={r.color ?? '#3b6fd8'}>
              <title>{`${r.label}: ${r.display}`}</title>
            </rect>
            <text x={labelW + w + 8} y={yy + 15} className="axis">
              {r.display}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
