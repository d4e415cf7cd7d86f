/**
 * What the end-to-end tests share: a real Mosquitto, a temp directory (state dirs, config files), an
 * observing MQTT client subscribed before any daemon starts, and daemons run from the built CLI with a
 * tiny real model. dispose() kills the daemons, closes the client, removes the broker and the directory.
 */
import {join} from "node:path";
import type {TinyModelKind} from "../../src/testing/tiny-qwen35.js";
import {startBroker, type Broker, type BrokerOptions} from "./broker.js";
import {spawnDaemon, tempDir, type DaemonProcess} from "./daemon.js";
import {TestClient} from "./mqtt-client.js";
import {modelFile} from "./models.js";

export interface HarnessOptions {
    /** prefix of the temp directory's name, e.g. "qe-core-" */
    prefix: string;
    /** the broker's options; as a function, made from the temp directory first (TLS files, an ACL) */
    broker?: BrokerOptions | ((dir: string) => BrokerOptions | Promise<BrokerOptions>);
    /** how the observer connects (credentials, a persistent session) */
    client?: Parameters<typeof TestClient.connect>[1];
    /** topic filters the observer subscribes to, in order */
    subscribe?: string[];
}

export interface DaemonStart {
    device: string;
    /** a tiny model of that kind as model.path, or "none" to plan from model.dir; default "scripted" */
    model?: TinyModelKind | "none";
    /** a GGUF made by the test (e.g. a tool-call model for a given tool) as model.path, in place of `model` */
    modelPath?: string;
    /** more CLI arguments; one given here wins over the test default (see baseArgs) */
    args?: string[];
    env?: NodeJS.ProcessEnv;
    /** default: a new directory; give the same one again to restart a daemon on its journal */
    stateDir?: string;
    /** default: the harness's broker */
    brokerUrl?: string;
    /** run under this command (e.g. unshare), which must exec its trailing arguments */
    prefix?: string[];
}

export class Harness {
    /** every daemon started here, in order (dispose kills them) */
    public readonly daemons: DaemonProcess[] = [];
    private stateDirs = 0;

    private constructor(public readonly broker: Broker, public readonly client: TestClient, public readonly dir: string,
        private readonly removeDir: () => Promise<void>) {}

    public static async start(o: HarnessOptions): Promise<Harness> {
        const dir = await tempDir(o.prefix);
        let broker: Broker | undefined;
        let client: TestClient | undefined;
        try {
            broker = await startBroker(typeof o.broker === "function" ? await o.broker(dir.path) : o.broker);
            client = await TestClient.connect(broker.url, o.client);
            for (const filter of o.subscribe ?? []) await client.subscribe(filter);
            return new Harness(broker, client, dir.path, dir.dispose);
        } catch (err) {
            // before() failed: its after() has no harness to dispose, so nothing may be left running
            await client?.close();
            await broker?.dispose();
            await dir.dispose();
            throw err;
        }
    }

    /** Starts a daemon without waiting for anything (dispose kills it). */
    public async spawn(o: DaemonStart): Promise<DaemonProcess> {
        const model = o.model ?? "scripted";
        const daemon = spawnDaemon({brokerUrl: o.brokerUrl ?? this.broker.url,
            modelPath: o.modelPath ?? (model === "none" ? "" : await modelFile(model)),
            deviceId: o.device, stateDir: o.stateDir ?? join(this.dir, `state-${++this.stateDirs}`),
            ...(o.args ? {args: o.args} : {}), ...(o.env ? {env: o.env} : {}), ...(o.prefix ? {prefix: o.prefix} : {})});
        this.daemons.push(daemon);
        return daemon;
    }

    /** Starts a daemon and waits until the observer sees its status `online` published after the start. */
    public async start(o: DaemonStart, timeoutMs = 20_000): Promise<DaemonProcess> {
        const seen = this.client.received.length;
        const daemon = await this.spawn(o);
        await this.client.waitFor(`${o.device} online`, (m) => this.client.received.indexOf(m) >= seen
            && m.topic === `qwen-edge/${o.device}/status` && m.json?.state === "online", timeoutMs);
        return daemon;
    }

    public async dispose(): Promise<void> {
        for (const daemon of this.daemons) await daemon.kill();
        await this.client.close();
        await this.broker.dispose();
        await this.removeDir();
    }
}
