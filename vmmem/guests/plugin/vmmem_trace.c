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
 * are counted and skipped. Within an epoch each page is recorded once, in first-touch
 * order, with a write flag set if any access to it in the epoch was a store. Instructions
 * are counted per executed translation block (each block adds its instruction count when
 * it starts), and an epoch ends at the first block start at or past its last instruction.
 *
 * At the start of every epoch after the first, the plugin writes "vmmem_epoch N" through
 * qemu_plugin_outs (QEMU's log, enabled with -d plugin). QEMU's trace events that go to the
 * same log (-d trace:...) therefore fall between the markers of the epoch in which they
 * happened, which is how the recorder ties disk requests to epochs.
 *
 * The recorder runs one vCPU (-smp 1, checked at install); the state below is not shared
 * between vCPUs. Counting starts at the first instruction QEMU runs (the firmware).
 *
 * Raw file (little-endian, read by vmmem.guests.record; the .npz format is in
 * docs/GUESTS.md):
 *   header  char magic[8] = "VMMTRC1\0"; u32 version = 1; u32 page_shift = 12;
 *           u64 epoch_insns; u64 ram_bytes
 *   epoch   u32 tag = 0x434f5045 ("EPOC"); u32 n; u64 epoch_index; u32 entry[n]
 *           entry = page number | 0x80000000 if written
 *   totals  u32 tag = 0x4c544f54 ("TOTL"); u32 0; u64 instructions, accesses, stores,
 *           io_accesses, outside_ram_accesses, epochs
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define PAGE_SHIFT 12
#define WRITE_BIT 0x80000000u
#define TAG_EPOCH 0x434f5045u
#define TAG_TOTALS 0x4c544f54u

static FILE *out;
static uint64_t epoch_insns = 1000000;
static uint64_t ram_pages;

static uint64_t insns;         /* guest instructions executed (counted at block start) */
static uint64_t next_boundary; /* first instruction of the next epoch */
static uint64_t epoch;         /* current epoch index */
static uint64_t accesses, stores, io_accesses, outside_ram;

static uint32_t *stamp; /* per page: epoch index + 1 when last recorded */
static uint32_t *slot;  /* per page: its index in buf for the current epoch */
static uint32_t *buf;   /* current epoch's entries, first-touch order */
static size_t buf_n, buf_cap;

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

static void flush_epoch(void)
{
    uint32_t head[2] = {TAG_EPOCH, (uint32_t)buf_n};
    write_all(head, sizeof(head));
    write_all(&epoch, sizeof(epoch));
    write_all(buf, buf_n * sizeof(uint32_t));
    buf_n = 0;
}

static void vcpu_tb_exec(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index;
    insns += (uint64_t)(uintptr_t)udata;
    if (insns >= next_boundary) {
        char line[48];
        flush_epoch();
        epoch++;
        next_boundary += epoch_insns;
        snprintf(line, sizeof(line), "vmmem_epoch %" PRIu64 "\n", epoch);
        qemu_plugin_outs(line);
    }
}

static void vcpu_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                     void *udata)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
    uint64_t page;
    bool store = qemu_plugin_mem_is_store(info);
    (void)vcpu_index;
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
    if (stamp[page] != (uint32_t)(epoch + 1)) {
        stamp[page] = (uint32_t)(epoch + 1);
        if (buf_n == buf_cap) {
            buf_cap *= 2;
            buf = realloc(buf, buf_cap * sizeof(uint32_t));
            if (buf == NULL) {
                die("out of memory");
            }
        }
        slot[page] = (uint32_t)buf_n;
        buf[buf_n++] = (uint32_t)page;
    }
    if (store) {
        buf[slot[page]] |= WRITE_BIT;
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
    uint64_t totals[6];
    (void)id;
    (void)udata;
    if (out == NULL) {
        return;
    }
    flush_epoch();
    totals[0] = insns;
    totals[1] = accesses;
    totals[2] = stores;
    totals[3] = io_accesses;
    totals[4] = outside_ram;
    totals[5] = epoch + 1;
    write_all(head, sizeof(head));
    write_all(totals, sizeof(totals));
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
    } header;

    if (!info->system_emulation) {
        fprintf(stderr, "vmmem_trace: needs system emulation\n");
        return -1;
    }
    if (info->system.max_vcpus > 1) {
        fprintf(stderr, "vmmem_trace: records one vCPU; run QEMU with -smp 1\n");
        return -1;
    }
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
    stamp = calloc(ram_pages, sizeof(uint32_t));
    slot = calloc(ram_pages, sizeof(uint32_t));
    buf_cap = 1 << 16;
    buf = malloc(buf_cap * sizeof(uint32_t));
    out = fopen(path, "wb");
    if (stamp == NULL || slot == NULL || buf == NULL || out == NULL) {
        fprintf(stderr, "vmmem_trace: cannot allocate or open %s\n", path);
        return -1;
    }
    setvbuf(out, NULL, _IOFBF, 1 << 20);
    memcpy(header.magic, "VMMTRC1", 8);
    header.version = 1;
    header.page_shift = PAGE_SHIFT;
    header.epoch_insns = epoch_insns;
    header.ram_bytes = ram_bytes;
    write_all(&header, sizeof(header));
    next_boundary = epoch_insns;

    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
