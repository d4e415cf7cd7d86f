/**
 * `work`'s outcome, or `onTimeout()`'s when `ms` pass first (it may throw: the race then rejects).
 * The timer is cleared either way, so a settled race leaves nothing holding the event loop open.
 */
export async function withTimeout<T, U>(work: Promise<T>, ms: number, onTimeout: () => U): Promise<T | U> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<U>((resolve, reject) => {
        timer = setTimeout(() => {
            try {
                resolve(onTimeout());
            } catch (err) {
                reject(err instanceof Error ? err : new Error(String(err)));
            }
        }, ms);
    });
    try {
        return await Promise.race([work, timedOut]);
    } finally {
        clearTimeout(timer);
    }
}
