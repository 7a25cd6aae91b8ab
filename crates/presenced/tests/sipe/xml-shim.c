/*
 * LD_PRELOAD shim for SIPE on libxml2 builds with upstream commit 235b15a5 ("SAX:
 * Always initialize SAX1 element handlers"; Debian 12 has it as CVE-2023-39615_2.patch,
 * libxml2 >= 2.12 has it upstream).
 *
 * sipe-xml.c hands xmlSAXUserParseMemory() a handler marked XML_SAX2_MAGIC whose
 * element callbacks are only the SAX1 startElement/endElement. Such libxml2 builds
 * then parse in SAX2 mode, call the (NULL) startElementNs/endElementNs, and SIPE sees
 * no elements at all: its contact list, roaming data and presence are dropped without
 * a word. This wrapper passes such a handler on as a SAX1 one (initialized = 1), so
 * libxml2 calls the callbacks SIPE did set. Every other handler is passed unchanged.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

#include <libxml/parser.h>

typedef int (*user_parse_memory)(xmlSAXHandlerPtr, void *, const char *, int);

int xmlSAXUserParseMemory(xmlSAXHandlerPtr sax, void *user_data, const char *buffer, int size)
{
	static user_parse_memory next;

	if (!next) {
		next = (user_parse_memory)dlsym(RTLD_NEXT, "xmlSAXUserParseMemory");
		if (!next)
			return -1;
	}
	if (sax && sax->initialized == XML_SAX2_MAGIC && !sax->startElementNs &&
	    !sax->endElementNs && (sax->startElement || sax->endElement)) {
		/* A copy: the caller's handler is static and may be shared. */
		xmlSAXHandler sax1 = *sax;

		sax1.initialized = 1;
		return next(&sax1, user_data, buffer, size);
	}
	return next(sax, user_data, buffer, size);
}
