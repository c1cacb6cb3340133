/*
 * vmmem_trace: a QEMU TCG plugin that records a guest's guest-physical 4 KiB page
 * accesses in epochs of a fixed number of guest instructions.
 *
 * Copyright (C) 2026 the vmmem authors
 * SPDX-License-Identifier: GPL-2.0-or-later
 * (a QEMU plugin is loaded into QEMU and built against its GPL-2.0-or-later header)
 *
 * Arguments (-plugin vmmem_trace.so,out=FILE,ram=BYTES[,epoch=INSNS]):
 *   out    the raw trace file to write (created/truncated)
 *   ram    the guest's RAM size in bytes: pages at or above it (ROM, option ROMs and other
 *          RAM blocks that QEMU reports at their own addresses) are counted, not recorded
 *   epoch  guest instructions per epoch (default 1000000)
 *
 * Per memory access the plugin asks QEMU for the guest-physical address; I/O accesses
 * are counted and skipped. Everything below is kept per vCPU (QEMU's vCPU index, 0 to
 * max_vcpus - 1): a vCPU's epochs count its own instructions, and within one of its epochs
 * each page is recorded once, in first-touch order, with a write flag set if any of the
 * vCPU's accesses to it in the epoch was a store. Instructions are counted per executed
 * translation block (each block adds its instruction count when it starts), and a vCPU's
 * epoch ends at the first of its blocks that starts at or past its last instruction. Epochs
 * are written, and numbered globally, in the order they end; at exit each vCPU's open (last,
 * partial) epoch is written, in vCPU order.
 *
 * The vCPUs must run on one host thread, in turn: QEMU's single-threaded TCG
 * (-accel tcg,thread=single), or one vCPU. Then no two callbacks ever run at once, and the
 * log tells exactly which vCPU issued each disk request (below). A callback from a second
 * host thread (multi-threaded TCG with -smp > 1) stops QEMU with an error.
 *
 * Whenever the running vCPU changes, and whenever a vCPU's epoch ends, the plugin writes
 * "vmmem_vcpu V K" through qemu_plugin_outs (QEMU's log, enabled with -d plugin): vCPU V
 * now runs its own epoch K (0-based, per vCPU). QEMU's trace events that go to the same log
 * (-d trace:...) and are emitted on the vCPU thread therefore fall after the marker of the
 * vCPU and epoch in which they happened, which is how the recorder ties disk requests to
 * vCPUs and epochs.
 *
 * Counting starts at the first instruction QEMU runs (the firmware, on vCPU 0).
 *
 * Raw file (little-endian, read by vmmem.guests.record; the .npz format is in
 * docs/GUESTS.md):
 *   header  char magic[8] = "VMMTRC2\0"; u32 version = 2; u32 page_shift = 12;
 *           u64 epoch_insns; u64 ram_bytes; u32 vcpus; u32 0
 *   epoch   u32 tag = 0x434f5045 ("EPOC"); u32 n; u64 epoch_index (global); u32 vcpu;
 *           u32 vcpu_epoch (the vCPU's own index); u32 entry[n]
 *           entry = page number | 0x80000000 if written
 *   totals  u32 tag = 0x4c544f54 ("TOTL"); u32 vcpus; u64 instructions, accesses, stores,
 *           io_accesses, outside_ram_accesses, epochs; u64 vcpu_instructions[vcpus]
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define PAGE_SHIFT 12
#define WRITE_BIT 0x80000000u
#define TAG_EPOCH 0x434f5045u
#define TAG_TOTALS 0x4c544f54u
#define MAX_VCPUS 64 /* vmmem.guests.trace.MAX_VCPUS */
#define NO_VCPU UINT32_MAX

struct vcpu {
    uint64_t insns;         /* its guest instructions (counted at block start) */
    uint64_t next_boundary; /* its first instruction of its next epoch */
    uint64_t epoch;         /* its own epoch index */
    uint32_t *stamp;        /* per page: its epoch index + 1 when last recorded */
    uint32_t *slot;         /* per page: the page's index in buf for its current epoch */
    uint32_t *buf;          /* its current epoch's entries, first-touch order */
    size_t buf_n, buf_cap;
};

static FILE *out;
static uint64_t epoch_insns = 1000000;
static uint64_t ram_pages;
static uint32_t n_vcpus;
static struct vcpu *vcpus;

static uint64_t epochs_written; /* global epoch index of the next epoch written */
static uint64_t accesses, stores, io_accesses, outside_ram;
static uint32_t running = NO_VCPU; /* the vCPU of the last block executed */
static pthread_t host_thread;      /* the one host thread that runs the vCPUs */
static bool host_thread_known;

static void die(const char *msg)
{
    fprintf(stderr, "vmmem_trace: %s\n", msg);
    exit(1);
}

static void write_all(const void *p, size_t size)
{
    if (fwrite(p, 1, size, out) != size) {
        die("cannot write the trace file");
    }
}

static void flush_epoch(uint32_t index)
{
    struct vcpu *v = &vcpus[index];
    uint32_t head[2] = {TAG_EPOCH, (uint32_t)v->buf_n};
    uint32_t who[2] = {index, (uint32_t)v->epoch};
    write_all(head, sizeof(head));
    write_all(&epochs_written, sizeof(epochs_written));
    write_all(who, sizeof(who));
    write_all(v->buf, v->buf_n * sizeof(uint32_t));
    v->buf_n = 0;
    epochs_written++;
}

static struct vcpu *vcpu_of(unsigned int index)
{
    if (index >= n_vcpus) {
        die("a vCPU index beyond max_vcpus");
    }
    return &vcpus[index];
}

static void vcpu_tb_exec(unsigned int vcpu_index, void *udata)
{
    struct vcpu *v = vcpu_of(vcpu_index);
    bool ended = false;

    /* One host thread runs every vCPU: a callback from another means they run at once. */
    if (!host_thread_known) {
        host_thread = pthread_self();
        host_thread_known = true;
    } else if (!pthread_equal(host_thread, pthread_self())) {
        die("vCPUs run on several host threads; run QEMU with -accel tcg,thread=single");
    }
    v->insns += (uint64_t)(uintptr_t)udata;
    if (v->insns >= v->next_boundary) {
        flush_epoch(vcpu_index);
        v->epoch++;
        v->next_boundary += epoch_insns;
        ended = true;
    }
    if (ended || vcpu_index != running) {
        char line[64];
        running = vcpu_index;
        snprintf(line, sizeof(line), "vmmem_vcpu %u %" PRIu64 "\n", vcpu_index, v->epoch);
        qemu_plugin_outs(line);
    }
}

static void vcpu_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                     void *udata)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
    struct vcpu *v = vcpu_of(vcpu_index);
    uint32_t stamp = (uint32_t)(v->epoch + 1);
    uint64_t page;
    bool store = qemu_plugin_mem_is_store(info);
    (void)udata;

    accesses++;
    stores += store;
    if (hw == NULL || qemu_plugin_hwaddr_is_io(hw)) {
        io_accesses++;
        return;
    }
    page = qemu_plugin_hwaddr_phys_addr(hw) >> PAGE_SHIFT;
    if (page >= ram_pages) {
        outside_ram++;
        return;
    }
    if (v->stamp[page] != stamp) {
        v->stamp[page] = stamp;
        if (v->buf_n == v->buf_cap) {
            v->buf_cap *= 2;
            v->buf = realloc(v->buf, v->buf_cap * sizeof(uint32_t));
            if (v->buf == NULL) {
                die("out of memory");
            }
        }
        v->slot[page] = (uint32_t)v->buf_n;
        v->buf[v->buf_n++] = (uint32_t)page;
    }
    if (store) {
        v->buf[v->slot[page]] |= WRITE_BIT;
    }
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, vcpu_tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_mem_cb(insn, vcpu_mem, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, NULL);
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *udata)
{
    uint32_t head[2] = {TAG_TOTALS, 0};
    uint64_t totals[6] = {0};
    (void)id;
    (void)udata;
    if (out == NULL) {
        return;
    }
    for (uint32_t i = 0; i < n_vcpus; i++) {
        flush_epoch(i);
        totals[0] += vcpus[i].insns;
    }
    head[1] = n_vcpus;
    totals[1] = accesses;
    totals[2] = stores;
    totals[3] = io_accesses;
    totals[4] = outside_ram;
    totals[5] = epochs_written;
    write_all(head, sizeof(head));
    write_all(totals, sizeof(totals));
    for (uint32_t i = 0; i < n_vcpus; i++) {
        write_all(&vcpus[i].insns, sizeof(vcpus[i].insns));
    }
    if (fclose(out) != 0) {
        die("cannot close the trace file");
    }
    out = NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    uint64_t ram_bytes = 0;
    struct {
        char magic[8];
        uint32_t version, page_shift;
        uint64_t epoch_insns, ram_bytes;
        uint32_t vcpus, reserved;
    } header;

    if (!info->system_emulation) {
        fprintf(stderr, "vmmem_trace: needs system emulation\n");
        return -1;
    }
    if (info->system.max_vcpus < 1 || info->system.max_vcpus > MAX_VCPUS) {
        fprintf(stderr, "vmmem_trace: records 1 to %d vCPUs, not %d\n", MAX_VCPUS,
                info->system.max_vcpus);
        return -1;
    }
    n_vcpus = (uint32_t)info->system.max_vcpus;
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            fprintf(stderr, "vmmem_trace: argument without '=': %s\n", argv[i]);
            return -1;
        }
        *eq = '\0';
        if (strcmp(argv[i], "out") == 0) {
            path = eq + 1;
        } else if (strcmp(argv[i], "ram") == 0) {
            ram_bytes = strtoull(eq + 1, NULL, 0);
        } else if (strcmp(argv[i], "epoch") == 0) {
            epoch_insns = strtoull(eq + 1, NULL, 0);
        } else {
            fprintf(stderr, "vmmem_trace: unknown argument: %s\n", argv[i]);
            return -1;
        }
    }
    if (path == NULL || ram_bytes == 0 || epoch_insns == 0) {
        fprintf(stderr, "vmmem_trace: needs out=FILE and ram=BYTES (and epoch > 0)\n");
        return -1;
    }
    ram_pages = ram_bytes >> PAGE_SHIFT;
    if (ram_pages == 0 || ram_pages > 0x7fffffffu) {
        fprintf(stderr, "vmmem_trace: ram out of range\n");
        return -1;
    }
    vcpus = calloc(n_vcpus, sizeof(*vcpus));
    if (vcpus == NULL) {
        fprintf(stderr, "vmmem_trace: cannot allocate\n");
        return -1;
    }
    for (uint32_t i = 0; i < n_vcpus; i++) {
        struct vcpu *v = &vcpus[i];
        /* calloc: the pages of a vCPU that touches little are never made resident */
        v->stamp = calloc(ram_pages, sizeof(uint32_t));
        v->slot = calloc(ram_pages, sizeof(uint32_t));
        v->buf_cap = 1 << 16;
        v->buf = malloc(v->buf_cap * sizeof(uint32_t));
        v->next_boundary = epoch_insns;
        if (v->stamp == NULL || v->slot == NULL || v->buf == NULL) {
            fprintf(stderr, "vmmem_trace: cannot allocate\n");
            return -1;
        }
    }
    out = fopen(path, "wb");
    if (out == NULL) {
        fprintf(stderr, "vmmem_trace: cannot open %s\n", path);
        return -1;
    }
    setvbuf(out, NULL, _IOFBF, 1 << 20);
    memcpy(header.magic, "VMMTRC2", 8);
    header.version = 2;
    header.page_shift = PAGE_SHIFT;
    header.epoch_insns = epoch_insns;
    header.ram_bytes = ram_bytes;
    header.vcpus = n_vcpus;
    header.reserved = 0;
    write_all(&header, sizeof(header));

    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
