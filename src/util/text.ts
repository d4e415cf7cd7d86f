/** Small text checks shared by the protocol, topics and configuration. */

/** A lone UTF-16 surrogate: it cannot be encoded as UTF-8 (a broker would see U+FFFD instead). */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * ` (did you mean "maxTokens"?)` when `key` is a known name spelt otherwise (case, "_" or "-"), or with
 * `maxEdits` > 0 one at most that many edits away (names over 3 letters); else "".
 */
export function didYouMean(key: string, known: readonly string[], maxEdits = 0): string {
    const squash = (s: string): string => s.toLowerCase().replace(/[_-]/g, "");
    const near = known.find((k) => squash(k) === squash(key))
        ?? (maxEdits > 0 ? known.find((k) => editDistance(squash(k), squash(key)) <= maxEdits && k.length > 3) : undefined);
    return near === undefined ? "" : ` (did you mean "${near}"?)`;
}

/** Levenshtein distance. */
export function editDistance(a: string, b: string): number {
    let row = Array.from({length: b.length + 1}, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        const next = [i];
        for (let j = 1; j <= b.length; j++)
            next.push(Math.min((row[j] ?? 0) + 1, (next[j - 1] ?? 0) + 1, (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)));
        row = next;
    }
    return row[b.length] ?? 0;
}
