/** Process exit codes; documented in `qwen-edge --help` and the README. */
/** 130 = 128 + SIGINT, as shells report a command stopped with Ctrl-C. */
export const EXIT = {ok: 0, failure: 1, usage: 2, noModelFits: 3, timeout: 4, interrupted: 130} as const;
