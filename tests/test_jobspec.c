/* test_jobspec.c — job file parser: a valid job (every option read back), each class of invalid input
 * (unknown key, wrong type, impossible value, YAML syntax, missing prerequisite stage, unknown codec,
 * duplicate key, unset variable, missing file) rejected with the right FILE:LINE, and every shipped
 * job file in jobs/ parsing. Plain C: prints ok/FAILED lines, returns EXIT_SUCCESS/EXIT_FAILURE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobspec.h"

#include "tq_check.h"

static const char* HEAD = "version: 1\nname: t\nmodel: ${TQ_SOURCE_DIR}/jobs/models/stories260K.bin\nseed: 7\n";

/* Parse head + body; expect status `want`, and when want != OK, "job.yaml:<line>:" and `needle` in the message. */
static void expect_text(const char* head, const char* body, tq_status want, int line, const char* needle)
{
    char text[8192];
    snprintf(text, sizeof text, "%s%s", head, body);
    tq_job job;
    tq_status rc = tq_job_parse(text, "/tmp/job.yaml", "/tmp", NULL, &job);
    const char* msg = tq_last_error();
    CHECK(rc == want, "status %d, want %d, for:\n%s\n  message: %s", rc, want, body, msg);
    if (want != TQ_OK && rc == want) {
        char at[64];
        snprintf(at, sizeof at, "job.yaml:%d:", line);
        CHECK(strstr(msg, at) != NULL, "message lacks '%s': %s", at, msg);
        CHECK(!needle || strstr(msg, needle) != NULL, "message lacks '%s': %s", needle, msg);
    }
    if (rc == want) printf("ok %s%s\n", want == TQ_OK ? "accepted" : "rejected: ", want == TQ_OK ? "" : msg);
}

static void expect(const char* body, tq_status want, int line, const char* needle)
{
    expect_text(HEAD, body, want, line, needle);
}

int main(void)
{
    const char* src = getenv("TQ_SOURCE_DIR");
    if (!src) src = TQ_SOURCE_DIR;
    setenv("TQ_SOURCE_DIR", src, 0);

    /* a valid job, read back */
    {
        const char* body = "resources: {ntasks: 4, time: \"01:00:00\", partition: gpu, mem: 64G}\n"
                           "stages:\n"
                           "  ingest: {verify: false}\n"
                           "  quantize:\n"
                           "    codec: tq3\n"
                           "    group: 64\n"
                           "    rules:\n"
                           "      - {role: norm, codec: f32}\n"
                           "      - {match: lm_head, codec: int8}\n"
                           "    max_unit_bytes: 1MiB\n"
                           "    resources: {ntasks: 8, gpus_per_task: 1}\n"
                           "  pack: {zstd_level: 0, shard_size: 2GB}\n"
                           "  publish:\n";
        char text[4096];
        snprintf(text, sizeof text, "%s%s", HEAD, body);
        tq_job j;
        tq_status rc = tq_job_parse(text, "/tmp/job.yaml", "/tmp", "/tmp/runx", &j);
        CHECK(rc == TQ_OK, "valid job rejected: %s", tq_last_error());
        if (rc == TQ_OK) {
            CHECK(j.seed == 7, "seed %llu", (unsigned long long)j.seed);
            CHECK(!strcmp(j.codec, "tq3") && j.group == 64, "codec %s group %d", j.codec, j.group);
            CHECK(j.n_rules == 2 && !strcmp(j.rules[0].role, "norm") && !strcmp(j.rules[1].match, "lm_head"), "rules");
            CHECK(j.max_unit_bytes == 1048576, "max_unit_bytes %llu", (unsigned long long)j.max_unit_bytes);
            CHECK(j.shard_size == 2000000000ull && j.zstd_level == 0, "pack options");
            CHECK(j.ingest_verify == 0, "ingest verify");
            CHECK(j.model_is_llama2c == 1, "model kind");
            CHECK(j.stage[TQ_STAGE_QUANTIZE].res.ntasks == 8 && j.stage[TQ_STAGE_QUANTIZE].res.gpus_per_task == 1 &&
                      !strcmp(j.stage[TQ_STAGE_QUANTIZE].res.partition, "gpu"),
                  "resources merged: ntasks %d", j.stage[TQ_STAGE_QUANTIZE].res.ntasks);
            CHECK(j.stage[TQ_STAGE_PACK].res.ntasks == 4 && !strcmp(j.stage[TQ_STAGE_PACK].res.mem, "64G"), "defaults");
            CHECK(j.stage[TQ_STAGE_PUBLISH].enabled && !j.stage[TQ_STAGE_VALIDATE].enabled, "enabled stages");
            CHECK(!strcmp(j.run_dir, "/tmp/runx") && !strcmp(j.output, "/tmp/runx/published"), "run_dir %s output %s",
                  j.run_dir, j.output);
            char codec[16];
            int g;
            tq_job_codec_for(&j, "norm", "model.norm.weight", codec, &g);
            CHECK(!strcmp(codec, "f32"), "rule by role: %s", codec);
            tq_job_codec_for(&j, "lm_head", "lm_head.weight", codec, &g);
            CHECK(!strcmp(codec, "int8"), "rule by match: %s", codec);
            tq_job_codec_for(&j, "mlp_up", "model.layers.0.mlp.up_proj.weight", codec, &g);
            CHECK(!strcmp(codec, "tq3") && g == 64, "default codec: %s/%d", codec, g);
            printf("ok valid job read back\n");
        }
    }
    /* invalid inputs: line numbers count from 1; HEAD has 4 lines */
    expect("modle: x\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 5, "unknown key 'modle'");
    expect("stages:\n  ingest: {}\n  quantize: {codec: tq4, group: 96}\n", TQ_ERR_FORMAT, 7, "64, 128 or 256");
    expect("stages:\n  quantize:\n    group: \"128\"\n", TQ_ERR_FORMAT, 7, "must be an integer");
    expect("resources: {ntasks: 0}\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 5, "out of range");
    expect("resources:\n  time: 1h\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 6, "not a Slurm time");
    expect("resources:\n  mem: lots\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 6, "Slurm memory");
    expect("stages:\n  quantize: {}\n  pack:\n    zstd_level: 30\n", TQ_ERR_FORMAT, 8, "out of range");
    expect("stages:\n  quantize: {}\n  pack: {shard_size: huge}\n", TQ_ERR_FORMAT, 7, "as a size");
    expect("stages:\n  ingest: {verify: maybe}\n", TQ_ERR_FORMAT, 6, "true or false");
    expect("stages:\n  ingest: [1, 2\n", TQ_ERR_FORMAT, 7, "YAML syntax error");
    expect("stages:\n  ingest: {}\n  pack: {}\n", TQ_ERR_FORMAT, 7, "needs stage 'quantize'");
    expect("stages:\n  quantize:\n    rules:\n      - {role: norm, codec: q9}\n", TQ_ERR_FORMAT, 8, "q9");
    expect("stages:\n  quantize:\n    rules:\n      - {role: nrm, codec: f32}\n", TQ_ERR_FORMAT, 8, "unknown role 'nrm'");
    expect("stages:\n  quantize:\n    codec: tq9\n", TQ_ERR_FORMAT, 6, "tq9");
    expect("stages:\n  quantize: {}\n  quantize: {}\n", TQ_ERR_FORMAT, 7, "duplicate key 'quantize'");
    expect("run_dir: ${TQ_SURELY_UNSET_VAR}/x\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 5, "TQ_SURELY_UNSET_VAR");
    expect("tokenizer: no/such/tok.bin\nstages: {ingest: {}}\n", TQ_ERR_NOTFOUND, 5, "not found");
    expect("resources: {nodes: 4, ntasks: 2}\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 6, "ntasks 2 < nodes 4");
    expect("stages:\n  allocate: {budget_bpw: 3}\n", TQ_ERR_FORMAT, 6, "needs stage 'calibrate'");
    expect("stages:\n  quantize: {device: tpu}\n", TQ_ERR_FORMAT, 6, "auto, cpu or gpu");
    const char* H2 = "model: ${TQ_SOURCE_DIR}/jobs/models/stories260K.bin\n";
    expect_text(H2, "seed: -3\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 2, "non-negative");
    expect_text(H2, "name: \"a b\"\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 2, "letters, digits");
    expect_text(H2, "version: 2\nstages: {ingest: {}}\n", TQ_ERR_FORMAT, 2, "version 2");
    expect_text(H2, "stages: {ingest: {}}\nseed: 1\nseed: 2\n", TQ_ERR_FORMAT, 4, "duplicate key 'seed'");
    {
        /* missing stages / empty file */
        tq_job j;
        CHECK(tq_job_parse("", "/tmp/e.yaml", "/tmp", NULL, &j) == TQ_ERR_FORMAT && strstr(tq_last_error(), "e.yaml:1:"),
              "empty file: %s", tq_last_error());
        char text[1024];
        snprintf(text, sizeof text, "%s", HEAD);
        CHECK(tq_job_parse(text, "/tmp/e.yaml", "/tmp", NULL, &j) == TQ_ERR_FORMAT && strstr(tq_last_error(), "missing 'stages:'"),
              "no stages: %s", tq_last_error());
    }
    /* sizes and times */
    {
        uint64_t v;
        CHECK(tq_parse_size("2GB", &v) == 0 && v == 2000000000ull, "2GB");
        CHECK(tq_parse_size("512MiB", &v) == 0 && v == 536870912ull, "512MiB");
        CHECK(tq_parse_size("12", &v) == 0 && v == 12, "12");
        CHECK(tq_parse_size("-1", &v) != 0 && tq_parse_size("3 parsecs", &v) != 0, "bad sizes");
        CHECK(tq_slurm_time_valid("30") && tq_slurm_time_valid("01:30:00") && tq_slurm_time_valid("2-00:00:00") &&
                  tq_slurm_time_valid("1-12"),
              "good times");
        CHECK(!tq_slurm_time_valid("1h") && !tq_slurm_time_valid("01:75:00") && !tq_slurm_time_valid(""), "bad times");
    }
    /* every shipped job parses (models that live on a cluster are pointed at an existing folder) */
    {
        setenv("TQ_QWEN122B_DIR", src, 1);
        setenv("TQ_SMOLLM2_DIR", src, 1);
        setenv("TQ_SYNTH122B_DIR", src, 1);
        const char* jobs[] = {"stories260k.yaml", "smollm2-135m.yaml", "qwen3.5-122b-a10b.yaml", "synth-122b.yaml"};
        for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/jobs/%s", src, jobs[i]);
            tq_job j;
            tq_status rc = tq_job_load(p, src, NULL, &j);
            CHECK(rc == TQ_OK, "%s: %s", jobs[i], tq_last_error());
            if (rc == TQ_OK) printf("ok %s parses\n", jobs[i]);
        }
    }
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
