/** The parent side of bench/raw-child.ts: RawEngine's calls, answered by the child process. */
import {fork, type ChildProcess} from "node:child_process";
import {fileURLToPath} from "node:url";
import type {RawRequest} from "./raw-child.js";
import type {GenerationSettings, RawRound, RawSample} from "./raw.js";

type Body<T> = T extends unknown ? Omit<T, "id"> : never;

export class RawProcess {
    private child: ChildProcess | null = null;
    private nextId = 1;
    private readonly waiting = new Map<number, {resolve: (v: unknown) => void; reject: (e: Error) => void}>();

    public constructor(private readonly settings: GenerationSettings) {}

    public get pid(): number {
        if (this.child?.pid === undefined) throw new Error("raw process not running");
        return this.child.pid;
    }

    public async start(): Promise<void> {
        const script = fileURLToPath(new URL("./raw-child.js", import.meta.url));
        // libuv's pool as the daemon's launcher sets it (docs/ENGINE-SPEED.md), so both sides decode alike
        const child = fork(script, [JSON.stringify(this.settings)], {stdio: ["ignore", "ignore", "pipe", "ipc"],
            env: {...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "1"}});
        this.child = child;
        let stderr = "";
        child.stderr?.on("data", (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
        const ready = new Promise<void>((resolve, reject) => {
            this.waiting.set(0, {resolve: () => resolve(), reject});
        });
        child.on("message", (m: {id: number; result: unknown; error?: string}) => {
            const w = this.waiting.get(m.id);
            this.waiting.delete(m.id);
            if (m.error !== undefined) w?.reject(new Error(`raw process: ${m.error}`));
            else w?.resolve(m.result);
        });
        child.once("exit", (code) => {
            for (const w of this.waiting.values()) w.reject(new Error(`raw process exited (${code}): ${stderr}`));
            this.waiting.clear();
        });
        await ready;
    }

    public round(concurrency: number, maxTokens?: number): Promise<RawRound> {
        return this.call({op: "round", concurrency, ...(maxTokens !== undefined ? {maxTokens} : {})}) as Promise<RawRound>;
    }

    public generate(maxTokens?: number): Promise<RawSample> {
        return this.call({op: "generate", ...(maxTokens !== undefined ? {maxTokens} : {})}) as Promise<RawSample>;
    }

    public async stop(): Promise<void> {
        const child = this.child;
        if (!child || child.exitCode !== null) return;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        await this.call({op: "stop"}).catch(() => undefined);
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
        this.child = null;
    }

    private call(body: Body<RawRequest>): Promise<unknown> {
        const child = this.child;
        if (!child) return Promise.reject(new Error("raw process not running"));
        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            this.waiting.set(id, {resolve, reject});
            child.send({id, ...body});
        });
    }
}
