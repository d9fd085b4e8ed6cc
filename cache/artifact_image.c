/*
 * cache/artifact_image.c: an artifact published in both places artifact_lookup() asks
 * (artifact_image.h).  The own repository comes first: a lookup finds it there without asking
 * the artifact repository; the artifact repository serves images nobody may push next to.
 */
#include "artifact_image.h"

#include <errno.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

/* One place: 1 when it took the artifact, -errno with error.h's message naming the place. */
static int publish_in(struct index_db *db, const struct reference *place,
		      const struct reference *image, const struct registry_options *ro,
		      const struct artifact_desc *subject, const char *artifact_type,
		      const struct artifact_blob *blobs, size_t n)
{
	_cleanup_free_ char *name = reference_to_string(place);
	char digest[DIGEST_STRING_MAX];
	int r;

	r = artifact_publish(db, place, image, ro, subject, artifact_type, blobs, n, digest);
	if (r < 0)
		return error_wrap(r, "cannot publish %s in '%s'", artifact_type,
				  name ?: place->repository);
	log_debug("published %s %s for %s in '%s'", artifact_type, digest, subject->digest,
		  name ?: place->repository);
	return 1;
}

int artifact_publish_image(struct index_db *db, const struct reference *image,
			   const struct registry_options *ro, const struct artifact_config *cfg,
			   const struct artifact_desc *subject, const char *artifact_type,
			   const struct artifact_blob *blobs, size_t n)
{
	_cleanup_(reference_freep) struct reference *repo = NULL;
	struct error_carry first = {};
	int own, other = 0, r;

	if (image->transport != REFERENCE_DOCKER)
		return error_set(-EINVAL, "artifacts are published only to registries");
	own = publish_in(db, image, NULL, ro, subject, artifact_type, blobs, n);
	if (own < 0)
		error_save(&first);
	r = artifact_config_place(cfg, &repo);
	if (r < 0 && own < 0)
		return error_restore(own, &first);
	if (r < 0) {
		log_warning("%s, published in the image's repository only", error_take(r));
		return 1;
	}
	if (repo)
		other = publish_in(db, repo, image, ro, subject, artifact_type, blobs, n);
	if (own < 0 && other <= 0)
		return error_restore(own, &first);
	if (own < 0)
		log_warning("%s, published in the artifact repository only",
			    error_take(error_restore(own, &first)));
	else if (other < 0)
		log_warning("%s, published in the image's repository only", error_take(other));
	return (own > 0) + (other > 0);
}
