/*
 * backend_direct.c - the direct paging backend: O_DIRECT pread/pwrite between the frame
 * and the file (frames are page-aligned, so no bounce buffer). Runs without the guest's lock:
 * it touches nothing but the frame and the file.
 */
#include "core.h"

#include <fcntl.h>

static int direct_opened(vmm_mem *m)
{
    (void)m;
    return VMM_OK;
}

static void direct_closing(vmm_mem *m) { (void)m; }

static int direct_write(vmm_mem *m, uint32_t slot, const uint8_t *src)
{
    return transfer(m, (uint8_t *)src, slot_offset(m, slot), 1);
}

static int direct_read(vmm_mem *m, uint32_t slot, uint8_t *dst)
{
    return transfer(m, dst, slot_offset(m, slot), 0);
}

const backend_ops vmm_backend_direct = {
    .name = "direct",
    .open_flags = O_DIRECT,
    .opened = direct_opened,
    .closing = direct_closing,
    .write = direct_write,
    .read = direct_read,
};
