/* tests/unit/test-mountinfo.c: path handling and mountinfo queries. */
#include <stdlib.h>
#include <unistd.h>

#include "cli/mountinfo.h"
#include "cache/base/util.h"
#include "tap.h"

int main(void)
{
	char tmpl[] = "/tmp/test-mountinfo.XXXXXX";
	_cleanup_free_ char *abs = NULL, *fstype = NULL;
	int r;

	check(mkdtemp(tmpl) != NULL, "temporary dir");
	r = path_make_absolute("/tmp/../tmp/./nonexistent-leaf/", &abs);
	check(r == 0 && streq(abs, "/tmp/nonexistent-leaf"),
	      "the parent is resolved, the leaf is kept unresolved and trailing '/' dropped (got %s)",
	      abs ? abs : "(null)");
	free(abs);
	abs = NULL;
	check(path_make_absolute("/no/such/parent/leaf", &abs) == -ENOENT,
	      "a missing parent is -ENOENT");

	check(mountinfo_find("/", &fstype) == 1 && fstype && *fstype, "'/' is a mountpoint with a type");
	check(mountinfo_find(tmpl, NULL) == 0, "a plain directory is not a mountpoint");

	(void)rmdir(tmpl);
	return tap_done();
}
