/** Small order statistics for benchmark samples. Empty input gives null: a missing figure stays visible. */

export function median(values: readonly number[]): number | null {
    return quantile(values, 0.5);
}

/** Linear interpolation between closest ranks (the "R-7" rule spreadsheets use). */
export function quantile(values: readonly number[], q: number): number | null {
    if (values.length === 0) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const pos = (sorted.length - 1) * q;
    const lo = Math.floor(pos);
    const hi = Math.ceil(pos);
    const a = sorted[lo]!;
    const b = sorted[hi]!;
    return a + (b - a) * (pos - lo);
}

export interface Spread {
    n: number;
    min: number | null;
    median: number | null;
    max: number | null;
    /** (max - min) / median: how far apart the repetitions were */
    relativeRange: number | null;
}

export function spread(values: readonly number[]): Spread {
    const m = median(values);
    const min = values.length > 0 ? Math.min(...values) : null;
    const max = values.length > 0 ? Math.max(...values) : null;
    return {
        n: values.length, min: round(min, 3), median: round(m, 3), max: round(max, 3),
        relativeRange: m !== null && m !== 0 && min !== null && max !== null ? round((max - min) / m, 4) : null
    };
}

export function round(value: number | null, digits: number): number | null {
    if (value === null || !Number.isFinite(value)) return null;
    const f = 10 ** digits;
    return Math.round(value * f) / f;
}

export function ratio(a: number | null, b: number | null): number | null {
    return a === null || b === null || b === 0 ? null : a / b;
}
