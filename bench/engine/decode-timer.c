/*
 * decode-timer: an LD_PRELOAD shim for `npm run bench:engine -- --decode-timer`.
 *
 * It wraps llama_decode() in the node-llama-cpp process and times every single-token decode from
 * inside the native code (wall clock and the calling thread's CPU clock), and notes which thread
 * and which CPU ran it. That splits a generated token's time in the Node process into the part in
 * llama.cpp/ggml (comparable 1:1 with native llama-bench's tg, which is a loop of llama_decode) and
 * the part outside it (JavaScript, the addon, thread handoffs).
 *
 * At exit it writes one JSON object to $QWEN_EDGE_DECODE_TIMER_OUT. Built by bench/engine/timer.ts
 * with the system C compiler; not part of the daemon.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The parts of llama.h this needs (C ABI, stable across the versions node-llama-cpp bundles). */
struct llama_context;
typedef int32_t llama_token;
typedef int32_t llama_pos;
typedef int32_t llama_seq_id;
typedef struct llama_batch {
    int32_t n_tokens;
    llama_token *token;
    float *embd;
    llama_pos *pos;
    int32_t *n_seq_id;
    llama_seq_id **seq_id;
    int8_t *logits;
} llama_batch;
struct llama_perf_context_data {
    double t_start_ms, t_load_ms, t_p_eval_ms, t_eval_ms;
    int32_t n_p_eval, n_eval, n_reused;
};

#define MAX_SAMPLES 200000
#define MAX_TIDS 64

static int32_t (*real_decode)(struct llama_context *, llama_batch);
static struct llama_perf_context_data (*real_perf)(const struct llama_context *);
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t wall_ns[MAX_SAMPLES];
static uint32_t cpu_ns[MAX_SAMPLES];
static long n_single;
static long n_calls;
static long cpu_changes; /* a decode that started on another CPU than the previous one */
static long mid_migrations; /* a decode that ended on another CPU than it started on */
static int last_cpu = -1;
static pid_t tids[MAX_TIDS];
static long tid_calls[MAX_TIDS];
static int n_tids;
static struct llama_context *last_ctx;

/*
 * node-llama-cpp dlopen()s libllama.so locally, so RTLD_NEXT does not see it: find the loaded
 * library by name and look the real functions up in it.
 */
static void *llama_lib;

static int find_llama(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    const char *name = info->dlpi_name;
    const char *base = name ? strrchr(name, '/') : NULL;
    if (base && strncmp(base + 1, "libllama", 8) == 0 && strncmp(base + 1, "libllama-common", 15) != 0) {
        llama_lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
        return llama_lib != NULL;
    }
    return 0;
}

static void *real_symbol(const char *symbol) {
    if (llama_lib == NULL) dl_iterate_phdr(find_llama, NULL);
    void *fn = llama_lib ? dlsym(llama_lib, symbol) : NULL;
    if (fn == NULL) {
        fprintf(stderr, "decode-timer: %s not found in a loaded libllama\n", symbol);
        abort();
    }
    return fn;
}

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int32_t llama_decode(struct llama_context *ctx, llama_batch batch) {
    if (real_decode == NULL) real_decode = (int32_t (*)(struct llama_context *, llama_batch))real_symbol("llama_decode");
    const int cpu0 = sched_getcpu();
    const uint64_t w0 = now_ns(CLOCK_MONOTONIC);
    const uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    const int32_t r = real_decode(ctx, batch);
    const uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    const uint64_t w1 = now_ns(CLOCK_MONOTONIC);
    const int cpu1 = sched_getcpu();
    const pid_t tid = (pid_t)syscall(SYS_gettid);
    pthread_mutex_lock(&lock);
    n_calls++;
    last_ctx = ctx;
    if (batch.n_tokens == 1 && n_single < MAX_SAMPLES) {
        wall_ns[n_single] = (uint32_t)(w1 - w0 > UINT32_MAX ? UINT32_MAX : w1 - w0);
        cpu_ns[n_single] = (uint32_t)(c1 - c0 > UINT32_MAX ? UINT32_MAX : c1 - c0);
        n_single++;
        if (last_cpu >= 0 && cpu0 != last_cpu) cpu_changes++;
        if (cpu1 != cpu0) mid_migrations++;
        last_cpu = cpu1;
        int i = 0;
        while (i < n_tids && tids[i] != tid) i++;
        if (i < MAX_TIDS) {
            if (i == n_tids) { tids[i] = tid; n_tids++; }
            tid_calls[i]++;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static int cmp_u32(const void *a, const void *b) {
    const uint32_t x = *(const uint32_t *)a;
    const uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double mean_us(const uint32_t *v, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += v[i];
    return n > 0 ? s / n / 1000.0 : 0;
}

__attribute__((destructor)) static void report(void) {
    const char *out = getenv("QWEN_EDGE_DECODE_TIMER_OUT");
    if (out == NULL || n_single == 0) return;
    FILE *f = fopen(out, "w");
    if (f == NULL) return;
    const double wall_mean = mean_us(wall_ns, n_single);
    const double cpu_mean = mean_us(cpu_ns, n_single);
    qsort(wall_ns, (size_t)n_single, sizeof wall_ns[0], cmp_u32);
    qsort(cpu_ns, (size_t)n_single, sizeof cpu_ns[0], cmp_u32);
    int reused = -1;
    if (real_perf == NULL) real_perf = (struct llama_perf_context_data (*)(const struct llama_context *))real_symbol("llama_perf_context");
    if (real_perf != NULL && last_ctx != NULL) reused = real_perf(last_ctx).n_reused;
    fprintf(f, "{\"calls\":%ld,\"singleTokenDecodes\":%ld,\"wallUs\":{\"mean\":%.1f,\"p10\":%.1f,\"p50\":%.1f,\"p90\":%.1f},"
               "\"threadCpuUs\":{\"mean\":%.1f,\"p50\":%.1f},\"cpuChanges\":%ld,\"midDecodeMigrations\":%ld,\"graphsReused\":%d,\"threads\":[",
            n_calls, n_single, wall_mean, wall_ns[n_single / 10] / 1000.0, wall_ns[n_single / 2] / 1000.0,
            wall_ns[n_single * 9 / 10] / 1000.0, cpu_mean, cpu_ns[n_single / 2] / 1000.0, cpu_changes, mid_migrations, reused);
    for (int i = 0; i < n_tids; i++) fprintf(f, "%s{\"tid\":%d,\"decodes\":%ld}", i ? "," : "", (int)tids[i], tid_calls[i]);
    fprintf(f, "]}\n");
    fclose(f);
}
