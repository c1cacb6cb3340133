/*
 * policy.h - the eviction policies behind one set of hooks: the one place that switches on
 * the policy. Each hook is static inline; called with a constant policy (the replay loop is
 * instantiated once per policy) the switch folds away and the policy's hook is inlined.
 * A new policy is a policy_<name>.h with its hooks, a VMM_POLICY_* in vmmem.h and a case
 * in each switch here.
 */
#ifndef VMMEM_POLICY_H
#define VMMEM_POLICY_H

#include "policy_clock.h"
#include "policy_lru.h"

static inline int policy_known(int policy)
{
    switch (policy) {
    case VMM_POLICY_LRU:
    case VMM_POLICY_CLOCK:
        return 1;
    default:
        return 0;
    }
}

/* A hit on frame f (resident page accessed). */
static inline __attribute__((always_inline)) void
policy_touch(const int policy, frame_meta *meta, uint8_t *flags, uint32_t f, uint32_t *head,
             uint32_t *tail)
{
    switch (policy) {
    case VMM_POLICY_LRU:
        lru_touch(meta, f, head, tail);
        break;
    case VMM_POLICY_CLOCK:
        clock_touch(flags, f);
        break;
    }
}

/* The frame to evict from m (which holds at least one). */
static inline uint32_t policy_victim(vmm_mem *m)
{
    switch (m->policy) {
    case VMM_POLICY_CLOCK:
        return clock_victim(m);
    case VMM_POLICY_LRU:
    default:
        return lru_victim(m);
    }
}

/* Calls REPLAY(policy) with the policy as a constant, so each policy gets its own copy of
 * the replay loop with its hooks inlined. */
#define POLICY_DISPATCH(policy, REPLAY)                                                        \
    do {                                                                                       \
        switch (policy) {                                                                      \
        case VMM_POLICY_CLOCK:                                                                 \
            REPLAY(VMM_POLICY_CLOCK);                                                          \
            break;                                                                             \
        case VMM_POLICY_LRU:                                                                   \
        default:                                                                               \
            REPLAY(VMM_POLICY_LRU);                                                            \
            break;                                                                             \
        }                                                                                      \
    } while (0)

#endif /* VMMEM_POLICY_H */
