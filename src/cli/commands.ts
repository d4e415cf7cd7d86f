/** The subcommands and their help texts. */
import {askCommand} from "./ask.js";
import {planCommand, pullCommand} from "./models.js";
import {homeAssistantCommand} from "./homeassistant.js";
import {statusCommand} from "./status.js";
import {renderExampleConfig} from "./config-example.js";
import {runCommand} from "./run.js";
import {routesCommand} from "./routes.js";
import {actionsCommand} from "./actions.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";
import {ConfigError} from "../errors.js";

export type Command = (args: string[]) => Promise<number>;

export const commands: Record<string, Command> = {
    run: runCommand,
    plan: planCommand,
    pull: pullCommand,
    ask: askCommand,
    status: statusCommand,
    homeassistant: homeAssistantCommand,
    routes: routesCommand,
    actions: actionsCommand,
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
  qwen-edge plan [--memory SIZE] [--json]
                                     which Qwen3.5 fits this device (or one with SIZE free), and why
  qwen-edge pull [--variant V]       download (or check) the chosen model now, with progress
  qwen-edge ask "prompt" [options]   send one request and print the answer
  qwen-edge status [--device ID]     state, model and health of one device or every device
  qwen-edge homeassistant remove     delete this device from Home Assistant's discovery
  qwen-edge routes list | test NAME  the prompt routes, and what one would do with a message
  qwen-edge actions list | test NAME the device actions, and what one call would publish
  qwen-edge config --example         print every configuration key with its default (YAML)
  qwen-edge help COMMAND             help for one command

Options for every command:
  --config FILE.yaml                 configuration file (also QWEN_EDGE_CONFIG)
  --SECTION-KEY VALUE                any configuration key, e.g. --mqtt-url mqtt://broker:1883,
                                     --model-path ./model.gguf, --inference-threads 2
                                     (environment: QWEN_EDGE_SECTION_KEY)
  -h, --help                         this help;  -V, --version   the version

Exit codes: 0 ok, 1 failure, 2 bad configuration or usage (also a model.path that does not exist
or is not a GGUF), 3 no model fits in memory, 4 no answer in time (ask), 130 interrupted (Ctrl-C).
`,
    run: `qwen-edge run [options]

Runs the daemon: connects to the broker (mqtt.url), loads the model, answers requests on
{base}/{device}/request (and the fleet queue), publishes retained status, until SIGTERM/SIGINT.

  --model-path FILE.gguf     the model to serve
  --mqtt-url URL             broker (default mqtt://127.0.0.1:1883)
  --device-id ID             this device's topic level (default: the hostname)
  --inference-threads N      generation threads (default: every CPU available to the process, affinity and cgroup quota, at most the physical cores)
  --log-format F             pretty, json, or auto (default: pretty on a terminal, else json)
See \`qwen-edge config --example\` for every key.
`,
    plan: `qwen-edge plan [--memory SIZE] [--json] [options]

Probes this device's memory (MemAvailable, cgroup v1/v2 limits, swap is never counted), estimates
what every Qwen3.5 candidate (0.8B, 2B, 4B, 9B x model.quants) needs for the configured context
(GGUF header of a local file, else the remote header by HTTP range, else built-in numbers), and
prints each candidate's requirement, whether it fits, and the choice: the largest that fits.
  --memory SIZE   plan for a device with SIZE available (e.g. 4GiB, 1536MiB, bytes)
  --json          one JSON object: budgetBytes, memory, candidates[], choice
Exit code 3 when nothing fits.
`,
    pull: `qwen-edge pull [--variant auto|0.8b|2b|4b|9b] [--memory SIZE] [--verbose] [options]

Provisions the model that \`plan\` chooses (or the given variant) into model.dir: a file already there
is checked and used; otherwise it is downloaded (resumable), its sha256 verified where Hugging Face
publishes it, and moved into place. Shows a progress bar on a terminal.
  --verbose   also print the log lines (on stderr, as log.format says)
Ctrl-C stops it (exit 130) and keeps what was downloaded: the next pull resumes from there.
`,
    ask: `qwen-edge ask "prompt" [--device ID] [--fleet] [--stream] [--json] [--max-tokens N]
                      [--system TEXT] [--thinking] [--timeout SECONDS] [--mqtt-url URL]

Sends one request to {base}/{device}/request (or the fleet queue with --fleet) with an MQTT v5
Response Topic, prints the answer (as it is generated with --stream; the whole JSON reply with
--json) and exits 0, or 1 on an error reply, or 4 when no answer came in time (default 120 s).
`,
    status: `qwen-edge status [--device ID] [--json] [--wait SECONDS] [--mqtt-url URL]

Reads the retained {base}/+/status, info and health topics, asks the devices for a health snapshot
now ({base}/fleet/health/refresh, or {base}/{device}/health/refresh) and prints a table of every
device (state, for how long, model, temperature, throttling, tokens/s, queue, memory, health age,
reason), or one device in detail with --device. --json prints {"devices": [{device, status, info,
health}]} (one such object with --device). Waits until the broker has sent everything and the
running devices have answered (at most 3 s; a device that does not answer shows its last snapshot
and its age), at most --wait (default 5 s); exits 0, or 4 when no device (or not the one asked
for) has published a status.
`,
    homeassistant: `qwen-edge homeassistant remove [--device ID]

Publishes an empty retained message on {telemetry.discoveryPrefix}/device/{device}/config, which
makes Home Assistant delete the device and its sensors. Set telemetry.homeAssistant to false first:
a daemon with discovery on announces itself again whenever Home Assistant restarts.
`,
    routes: `qwen-edge routes list [--config FILE.yaml]
qwen-edge routes test NAME --topic TOPIC [--payload TEXT] [--config FILE.yaml]

Prompt routes (the \`routes:\` list of the configuration; see docs/ROUTES.md) answer messages
from devices that cannot speak qwen-edge's request format, on their own topics.

list   prints every route: topic filter, payload reading, filter, rate limit, reply topic,
       format, QoS and retain.
test   shows what the route would do with one message on TOPIC carrying TEXT (default empty):
       the wildcard segments, whether the filter passes, the rate limit, the reply topic, the
       system prompt and the prompt it would build. Nothing is loaded or connected. Exits 0 when
       the message would be queued, 1 when it would be filtered or refused, 2 on a bad
       configuration (a loop, an unknown placeholder, ...) or an unknown route.
`,
    actions: `qwen-edge actions list [--config FILE.yaml]
qwen-edge actions test NAME --args JSON [--config FILE.yaml]

Device actions (the \`actions:\` list of the configuration; see docs/ACTIONS.md) are tools the
model may call that the device runs itself, by publishing one MQTT message, only for requests
and routes that grant them by name ("actions": ["set_light"]).

list   prints every action: its parameters (? = optional), topic template, QoS, retain, rate
       limit, and the routes that grant it.
test   checks one call with the arguments --args (a JSON object) exactly as the daemon would:
       the schema, the topic built from the arguments, the publish policy; prints the topic and
       payload it would publish. Nothing is published, loaded or connected. Exits 0 when the call
       would be published, 1 when it would be refused or is invalid, 2 on a bad configuration.
`,
    config: `qwen-edge config --example

Prints every configuration key with its doc, environment variable, argument and default, as YAML
(the content of deploy/config.example.yaml).
`
};

export function usage(command?: string): string {
    return HELP[command ?? ""] ?? HELP[""] ?? "";
}
