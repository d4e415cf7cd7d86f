/** Command-line options of `npm run bench -- [options]`. */

export interface BenchOptions {
    quick: boolean;
    /** a GGUF to use instead of the generated benchmark model */
    model: string | null;
    threads: number;
    parallel: number;
    maxTokens: number;
    /** interleaved rounds of the throughput phase */
    rounds: number;
    /** raw/daemon pairs of the first-chunk latency phase */
    latencyPairs: number;
    latencyMaxTokens: number;
    idleSeconds: number;
    /** extra daemon starts for the start-up figure (besides the daemons the benchmark starts anyway) */
    startupRuns: number;
    /** telemetry interval of the second daemon, compared with the default one */
    healthInterval: number;
    /** run the daemons under node --cpu-prof, profiles in bench/results/profiles */
    cpuProf: boolean;
    /** extra node flags for the daemons, e.g. "--max-semi-space-size=1" (to try a remedy) */
    daemonNodeFlags: string[];
    out: string | null;
    seed: number;
}

export const USAGE = `usage: npm run bench -- [options]
  --quick                 fewer repetitions and a 15 s idle window (about a minute)
  --model FILE            benchmark this GGUF instead of the generated one (hidden 256, 8 layers, endless)
  --threads N             generation threads for raw and daemon (default 1)
  --parallel N            inference.parallel: context sequences and concurrent clients (default 2)
  --max-tokens N          tokens per throughput request (default 256)
  --rounds N              interleaved throughput rounds (default 8, quick 3)
  --latency-pairs N       raw/daemon pairs for first-chunk latency (default 30, quick 10)
  --idle-seconds N        idle CPU window (default 60, quick 15)
  --startup-runs N        extra daemon starts for start-up time (default 3, quick 1)
  --health-interval N     health interval (s) of the daemon compared with the default one (default 1)
  --cpu-prof              write the daemons' CPU profiles to bench/results/profiles
  --daemon-node-flags "F" extra node flags for the daemons, e.g. "--max-semi-space-size=1"
  --out FILE              result JSON (default bench/results/latest.json)
  --seed N                seed of the generated model and of every request (default 1)
`;

export function parseOptions(argv: string[]): BenchOptions {
    const quick = argv.includes("--quick");
    const o: BenchOptions = {
        quick, model: null, threads: 1, parallel: 2, maxTokens: 256, rounds: quick ? 3 : 8, latencyPairs: quick ? 10 : 30,
        latencyMaxTokens: 8, idleSeconds: quick ? 15 : 60, startupRuns: quick ? 1 : 3, healthInterval: 1, cpuProf: false, daemonNodeFlags: [], out: null, seed: 1
    };
    const int = (flag: string, value: string | undefined, min: number): number => {
        const n = Number(value);
        if (value === undefined || !Number.isSafeInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i] ?? "";
        const next = (): string | undefined => argv[++i];
        switch (arg) {
            case "--quick": break;
            case "--model": o.model = next() ?? null; if (o.model === null) throw new Error("--model needs a file"); break;
            case "--threads": o.threads = int(arg, next(), 1); break;
            case "--parallel": o.parallel = int(arg, next(), 1); break;
            case "--max-tokens": o.maxTokens = int(arg, next(), 1); break;
            case "--rounds": o.rounds = int(arg, next(), 1); break;
            case "--latency-pairs": o.latencyPairs = int(arg, next(), 1); break;
            case "--idle-seconds": o.idleSeconds = int(arg, next(), 1); break;
            case "--startup-runs": o.startupRuns = int(arg, next(), 0); break;
            case "--health-interval": o.healthInterval = int(arg, next(), 1); break;
            case "--cpu-prof": o.cpuProf = true; break;
            case "--daemon-node-flags": o.daemonNodeFlags = (next() ?? "").split(/\s+/).filter(Boolean); break;
            case "--out": o.out = next() ?? null; break;
            case "--seed": o.seed = int(arg, next(), 0); break;
            default: throw new Error(`unknown option ${arg}`);
        }
    }
    return o;
}
