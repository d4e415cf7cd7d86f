/** The subcommands and their help texts. */
import {askCommand} from "./ask.js";
import {renderExampleConfig} from "./config-example.js";
import {runCommand} from "./run.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";
import {ConfigError} from "../errors.js";

export type Command = (args: string[]) => Promise<number>;

export const commands: Record<string, Command> = {
    run: runCommand,
    ask: askCommand,
    config: async (args) => {
        const {flags} = splitArgs(args, {booleans: ["example"]});
        if (flags.example !== true) throw new ConfigError("config: use `qwen-edge config --example` to print every key with its default");
        process.stdout.write(renderExampleConfig());
        return EXIT.ok;
    }
};

const HELP: Record<string, string> = {
    "": `qwen-edge — run the largest Qwen3.5 that fits this device and serve it over MQTT

Usage:
  qwen-edge [run] [options]          run the daemon (default)
  qwen-edge ask "prompt" [options]   send one request and print the answer
  qwen-edge config --example         print every configuration key with its default (YAML)
  qwen-edge help COMMAND             help for one command

Options for every command:
  --config FILE.yaml                 configuration file (also QWEN_EDGE_CONFIG)
  --SECTION-KEY VALUE                any configuration key, e.g. --mqtt-url mqtt://broker:1883,
                                     --model-path ./model.gguf, --inference-threads 2
                                     (environment: QWEN_EDGE_SECTION_KEY)
  -h, --help                         this help;  -V, --version   the version

Exit codes: 0 ok, 1 failure, 2 bad configuration or usage, 3 no model fits in memory,
4 no answer in time (ask).
`,
    run: `qwen-edge run [options]

Runs the daemon: connects to the broker (mqtt.url), loads the model, answers requests on
{base}/{device}/request (and the fleet queue), publishes retained status, until SIGTERM/SIGINT.

  --model-path FILE.gguf     the model to serve
  --mqtt-url URL             broker (default mqtt://127.0.0.1:1883)
  --device-id ID             this device's topic level (default: the hostname)
  --inference-threads N      generation threads (default: CPUs available)
See \`qwen-edge config --example\` for every key.
`,
    ask: `qwen-edge ask "prompt" [--device ID] [--fleet] [--stream] [--json] [--max-tokens N]
                      [--system TEXT] [--thinking] [--timeout SECONDS] [--mqtt-url URL]

Sends one request to {base}/{device}/request (or the fleet queue with --fleet) with an MQTT v5
Response Topic, prints the answer (as it is generated with --stream; the whole JSON reply with
--json) and exits 0, or 1 on an error reply, or 4 when no answer came in time (default 120 s).
`,
    config: `qwen-edge config --example

Prints every configuration key with its doc, environment variable, argument and default, as YAML
(the content of deploy/config.example.yaml).
`
};

export function usage(command?: string): string {
    return HELP[command ?? ""] ?? HELP[""] ?? "";
}
