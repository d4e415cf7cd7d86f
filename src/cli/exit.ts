/** Process exit codes; documented in `qwen-edge --help` and the README. */
export const EXIT = {ok: 0, failure: 1, usage: 2, noModelFits: 3, timeout: 4} as const;
