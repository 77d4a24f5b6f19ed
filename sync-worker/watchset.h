/* Which volumes this instance watches (watchset.c). */
#ifndef SYNC_WATCHSET_H
#define SYNC_WATCHSET_H

int watchset_start(void);
void watchset_stop(void);

#endif
