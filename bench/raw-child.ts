/**
 * The raw side runs in a process of its own, like the daemon: a process that does nothing but
 * generate, not the benchmark process with its MQTT clients and samples. Timing is taken in here,
 * so the IPC round trip is not counted. It is also the memory and idle-CPU
 * baseline: node-llama-cpp alone with the same model and context.
 */
import {RawEngine, type GenerationSettings} from "./raw.js";

export type RawRequest =
    | {id: number; op: "round"; concurrency: number; maxTokens?: number}
    | {id: number; op: "generate"; maxTokens?: number}
    | {id: number; op: "stop"};

async function main(): Promise<void> {
    const settings = JSON.parse(process.argv[2] ?? "{}") as GenerationSettings;
    const raw = new RawEngine(settings);
    await raw.start();
    const reply = (id: number, result: unknown, error?: string): void => {
        process.send?.({id, result, ...(error !== undefined ? {error} : {})});
    };
    process.on("message", (m: RawRequest) => {
        const run = async (): Promise<unknown> => {
            switch (m.op) {
                case "round": return raw.round(m.concurrency, m.maxTokens);
                case "generate": return raw.generate(m.maxTokens);
                case "stop":
                    await raw.stop();
                    setImmediate(() => process.disconnect());
                    return null;
            }
        };
        run().then((result) => reply(m.id, result), (err: unknown) => reply(m.id, null, err instanceof Error ? err.message : String(err)));
    });
    reply(0, "ready");
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
});
