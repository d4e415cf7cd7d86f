/**
 * A strict reader of the Prometheus text exposition format 0.0.4: it throws, naming the line, on
 * anything a scraper could misread — a sample without HELP and TYPE before it, a family split in two,
 * a bad metric or label name, an invalid escape, a duplicate series, an unparsable value, a counter
 * that is negative or not named `_total`.
 */

export interface ParsedSample {
    name: string;
    labels: Record<string, string>;
    value: number;
}

export interface ParsedFamily {
    name: string;
    type: "counter" | "gauge" | "summary" | "histogram" | "untyped";
    help: string;
    samples: ParsedSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)$/;
const TYPES = new Set(["counter", "gauge", "summary", "histogram", "untyped"]);

export function parseExposition(text: string): Map<string, ParsedFamily> {
    if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
    const families = new Map<string, ParsedFamily>();
    const closed = new Set<string>();
    const series = new Set<string>();
    let current: ParsedFamily | null = null;
    let pendingHelp: {name: string; help: string} | null = null;
    const lines = text.slice(0, -1).split("\n");
    lines.forEach((line, index) => {
        const where = `line ${index + 1} (${JSON.stringify(line.slice(0, 120))})`;
        if (line === "") throw new Error(`${where}: empty line`);
        if (line.startsWith("#")) {
            const help = /^# HELP (\S+) (.*)$/.exec(line);
            const type = /^# TYPE (\S+) (\S+)$/.exec(line);
            if (help?.[1] !== undefined) {
                const name = help[1];
                if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name`);
                if (families.has(name) || pendingHelp) throw new Error(`${where}: second HELP or HELP after samples`);
                if (/\\[^\\n]/.test((help[2] ?? "").replace(/\\\\/g, ""))) throw new Error(`${where}: bad escape in HELP`);
                if (current) closed.add(current.name);
                current = null;
                pendingHelp = {name, help: help[2] ?? ""};
                return;
            }
            if (type?.[1] !== undefined && type[2] !== undefined) {
                const name = type[1];
                if (!pendingHelp || pendingHelp.name !== name) throw new Error(`${where}: TYPE without the family's HELP right before it`);
                if (!TYPES.has(type[2])) throw new Error(`${where}: unknown type ${type[2]}`);
                current = {name, type: type[2] as ParsedFamily["type"], help: pendingHelp.help, samples: []};
                families.set(name, current);
                pendingHelp = null;
                return;
            }
            throw new Error(`${where}: a comment that is neither HELP nor TYPE`);
        }
        if (!current || pendingHelp) throw new Error(`${where}: sample outside a family (no HELP/TYPE before it)`);
        const family: ParsedFamily = current;
        const sample = parseSample(line, where);
        const allowed = family.type === "summary" ? [family.name, `${family.name}_sum`, `${family.name}_count`]
            : family.type === "histogram" ? [`${family.name}_bucket`, `${family.name}_sum`, `${family.name}_count`] : [family.name];
        if (!allowed.includes(sample.name)) throw new Error(`${where}: sample ${sample.name} does not belong to family ${family.name}`);
        if (closed.has(family.name)) throw new Error(`${where}: family ${family.name} continues after another family`);
        if (family.type === "summary" && sample.name === family.name && !("quantile" in sample.labels))
            throw new Error(`${where}: summary sample without a quantile label`);
        if (family.type === "counter") {
            if (!family.name.endsWith("_total")) throw new Error(`${where}: counter ${family.name} is not named *_total`);
            if (!(sample.value >= 0)) throw new Error(`${where}: counter value ${sample.value} is negative or NaN`);
        }
        const key = `${sample.name}{${Object.entries(sample.labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(",")}}`;
        if (series.has(key)) throw new Error(`${where}: duplicate series ${key}`);
        series.add(key);
        family.samples.push(sample);
    });
    if (pendingHelp) throw new Error("HELP at the end without a TYPE");
    for (const f of families.values()) if (f.samples.length === 0) throw new Error(`family ${f.name} has no samples`);
    return families;
}

function parseSample(line: string, where: string): ParsedSample {
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) throw new Error(`${where}: bad metric name`);
    const name = nameMatch[0];
    let i = name.length;
    const labels: Record<string, string> = {};
    if (line[i] === "{") {
        i++;
        while (line[i] !== "}") {
            const labelMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
            if (!labelMatch) throw new Error(`${where}: bad label name at column ${i + 1}`);
            const label = labelMatch[0];
            if (!LABEL_NAME.test(label) || label.startsWith("__")) throw new Error(`${where}: reserved or bad label name ${label}`);
            if (label in labels) throw new Error(`${where}: label ${label} twice`);
            i += label.length;
            if (line.slice(i, i + 2) !== "=\"") throw new Error(`${where}: expected ="" after label ${label}`);
            i += 2;
            let value = "";
            for (;;) {
                const c = line[i];
                if (c === undefined) throw new Error(`${where}: unterminated label value`);
                if (c === "\"") break;
                if (c === "\\") {
                    const next = line[i + 1];
                    if (next === "\\") value += "\\";
                    else if (next === "\"") value += "\"";
                    else if (next === "n") value += "\n";
                    else throw new Error(`${where}: bad escape \\${next ?? ""} in label value`);
                    i += 2;
                } else {
                    value += c;
                    i++;
                }
            }
            labels[label] = value;
            i++;
            if (line[i] === ",") {
                i++;
                if (line[i] === "}") throw new Error(`${where}: trailing comma in labels`);
            } else if (line[i] !== "}") {
                throw new Error(`${where}: expected , or } after a label`);
            }
        }
        i++;
    }
    const rest = line.slice(i);
    const parts = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
    if (!parts?.[1]) throw new Error(`${where}: expected one space, a value and an optional timestamp`);
    const raw = parts[1];
    const value = raw === "NaN" ? NaN : raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : FLOAT.test(raw) ? Number(raw) : null;
    if (value === null) throw new Error(`${where}: value ${raw} is not a float`);
    return {name, labels, value};
}
