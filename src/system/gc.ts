/**
 * A full V8 garbage collection, on demand. Reading a real Qwen3.5 header in JS (the planner's estimates, and
 * node-llama-cpp's own load) makes ~70-90 MiB of garbage out of 248,320 token strings and as many merges; V8
 * keeps it until its next major GC, which may come after the model's weights are in, so the daemon's peak
 * RSS varied by up to 80 MiB from run to run (docs/MEMORY.md). One collection after planning and after
 * loading makes the peak what the plan says. Node exposes gc() only behind --expose-gc; the flag can be set
 * at run time and the function taken from a fresh context, so no command line has to carry it.
 */
import {setFlagsFromString} from "node:v8";
import {runInNewContext} from "node:vm";

let collect: (() => void) | null | undefined;

export function collectGarbage(): void {
    if (collect === undefined) {
        const exposed = (globalThis as {gc?: () => void}).gc;
        if (typeof exposed === "function") {
            collect = exposed;
        } else {
            try {
                setFlagsFromString("--expose-gc");
                collect = runInNewContext("gc") as () => void;
            } catch {
                collect = null;
            }
        }
    }
    collect?.();
}
