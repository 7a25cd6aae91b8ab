/*
 * A headless Pidgin SIPE client for end-to-end tests.
 *
 * Usage: sipe-harness USER SERVER USERDIR [PASSWORD]
 *   USER     alice@example.com
 *   SERVER   127.0.0.1:PORT (plain TCP)
 *   USERDIR  an empty directory for libpurple's files (one per run)
 *   PASSWORD for NTLM (default "secret"; SIPE needs one even when it is not asked)
 *
 * It signs USER in with the libpurple protocol plugin prpl-sipe and writes one line
 * per event to stdout (flushed after every line):
 *
 *   signed-on
 *   signed-off
 *   connection-error <reason code> <text>
 *   group-added <name>             (SIPE has the contact list once "Other Contacts" is there)
 *   group-removed <name>
 *   buddy-added <name>
 *   buddy-removed <name>
 *   buddy-aliased <name> <alias>
 *   buddy-signed-on <name> <status id> <message>
 *   buddy-signed-off <name> <status id> <message>
 *   buddy-status <name> <status id> <message>
 *   request <kind> <title> (a dialog that was answered with its default, or as filled
 *                          in by a command: search fills "Search for a contact")
 *   request add-buddy <user>|<group>|<alias>  (Pidgin's Add Buddy dialog; it is
 *                          answered as a user who just presses Add)
 *   notify <title> | <primary> | <secondary>
 *   results-columns <title>|<title>|...   (a search results dialog: its columns,
 *   result <value>|<value>|...             one line per row, in the dialog's order,
 *   results-end <rows> <text>              and the text above the rows, where SIPE
 *                                          says that more matched)
 *   info <label>=<value>   (a Get Info dialog: one line per pair, in order,
 *   info-section <header>   section headers as shown,
 *   info-end <user>         then the end)
 *   ok <command> | error <text> (the answer to each command)
 *
 * Commands, one per line on stdin. Buddy-list commands call libpurple as Pidgin's
 * buddy list (pidgin/gtkblist.c, gtkdialogs.c) does for the same action, so that SIPE
 * does what it does for a real user. Group names may contain spaces.
 *
 *   status <status id> [message]   set our own status (and note)
 *   add <user> [group]             Add Buddy into a group (default "Other Contacts");
 *                                  a group that does not exist yet is created first
 *   copy <user> <group>            Add Buddy for a buddy already in another group
 *   move <user> <group>            drag the buddy onto another group (a group that
 *                                  does not exist yet is created first, as Add Group)
 *   remove <user> [group]          Remove the buddy (from one group when given)
 *   rename-group <old>|<new>       rename a group ('|' as names may have spaces)
 *   remove-group <name>            Remove Group: its buddies, then the group
 *   alias <user> [alias]           Alias the buddy (no alias clears it)
 *   groups                         print every group and membership:
 *                                    group <name>
 *                                    member <buddy>|<group>|<alias or empty>
 *   block <user>                   deny-list a user (SIPE: container 32000)
 *   unblock <user>                 remove a user from the deny list
 *   list                           print every buddy as a buddy-status line
 *   search <field>=<value> ...     the account action "Contact search...": the dialog
 *                                  it opens is filled in with these fields (ids of
 *                                  SIPE's dialog: given, surname, email, sipid,
 *                                  company, country; a value runs to the next
 *                                  <field>=, spaces included) and submitted; the
 *                                  results (or a notify) follow later
 *   search-add <row>               press Add in the latest results dialog with row
 *                                  <row> (from 0) selected; SIPE opens Pidgin's Add
 *                                  Buddy dialog, which is answered with Add
 *   info <user>                    Get Info on a user; the info lines follow later
 *   quit                           sign out and exit (so does end of input)
 *
 * Set SIPE_HARNESS_DEBUG=1 to get libpurple's and SIPE's debug log on stderr (every
 * line prefixed with USER/PID, as several clients may share one stderr).
 */

#include <glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <account.h>
#include <blist.h>
#include <connection.h>
#include <core.h>
#include <debug.h>
#include <eventloop.h>
#include <notify.h>
#include <plugin.h>
#include <prefs.h>
#include <privacy.h>
#include <request.h>
#include <savedstatuses.h>
#include <server.h>
#include <prpl.h>
#include <signals.h>
#include <status.h>
#include <util.h>

#define UI_ID "presenced-sipe-harness"
#define GROUP "Other Contacts"

static GMainLoop *loop;
static PurpleAccount *account;
static gboolean debug_on;
static gboolean quitting;

/*
 * SIPE derives its endpoint id (the epid, and REGISTER's sip.instance) from the user,
 * the host name and the local IP address, so two clients of one user on this machine
 * would be one endpoint. Each run claims a host name of its own, as a second machine
 * would have one (SIPE asks GLib's g_get_host_name, which asks this).
 */
int gethostname(char *name, size_t len)
{
	g_snprintf(name, len, "sipe-harness-%d", (int)getpid());
	return 0;
}

/* ---- output ------------------------------------------------------------ */

/* One event line; tabs, CR and LF in the fields become spaces. */
static void emit(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void emit(const char *fmt, ...)
{
	va_list ap;
	gchar *line;
	gchar *p;

	va_start(ap, fmt);
	line = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	for (p = line; *p; p++) {
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	}
	fputs(line, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	g_free(line);
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

/* ---- event loop: libpurple on the GLib main loop ------------------------ */

struct watch {
	PurpleInputFunction func;
	gpointer data;
};

static gboolean watch_ready(GIOChannel *channel, GIOCondition cond, gpointer data)
{
	struct watch *w = data;
	int purple_cond = 0;

	if (cond & (G_IO_IN | G_IO_HUP | G_IO_ERR))
		purple_cond |= PURPLE_INPUT_READ;
	if (cond & (G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL))
		purple_cond |= PURPLE_INPUT_WRITE;
	w->func(w->data, g_io_channel_unix_get_fd(channel), (PurpleInputCondition)purple_cond);
	return TRUE;
}

static guint loop_input_add(gint fd, PurpleInputCondition cond, PurpleInputFunction func,
			    gpointer data)
{
	struct watch *w = g_new0(struct watch, 1);
	GIOChannel *channel = g_io_channel_unix_new(fd);
	int glib_cond = 0;
	guint id;

	w->func = func;
	w->data = data;
	if (cond & PURPLE_INPUT_READ)
		glib_cond |= G_IO_IN | G_IO_HUP | G_IO_ERR;
	if (cond & PURPLE_INPUT_WRITE)
		glib_cond |= G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL;
	id = g_io_add_watch_full(channel, G_PRIORITY_DEFAULT, (GIOCondition)glib_cond,
				 watch_ready, w, g_free);
	g_io_channel_unref(channel);
	return id;
}

static PurpleEventLoopUiOps loop_ops = {
	.timeout_add = g_timeout_add,
	.timeout_remove = g_source_remove,
	.input_add = loop_input_add,
	.input_remove = g_source_remove,
	.timeout_add_seconds = g_timeout_add_seconds,
};

/* ---- debug log to stderr, on request ------------------------------------ */

static const char *debug_prefix = "";

/* Every line gets the user as a prefix: two clients may share one stderr. */
static void debug_print(PurpleDebugLevel level, const char *category, const char *text)
{
	gchar **lines = g_strsplit(or_empty(text), "\n", -1);
	gchar **l;

	(void)level;
	for (l = lines; *l; l++) {
		if (!**l && !l[1])
			break; /* after the final newline */
		fprintf(stderr, "%s| [%s] %s\n", debug_prefix, or_empty(category), *l);
	}
	g_strfreev(lines);
}

static gboolean debug_enabled(PurpleDebugLevel level, const char *category)
{
	(void)level;
	(void)category;
	return debug_on;
}

static PurpleDebugUiOps debug_ops = {
	.print = debug_print,
	.is_enabled = debug_enabled,
};

/* ---- dialogs: every request is answered with its default, later --------- */

/*
 * libpurple registers a request's handle after the UI callback returns, so the
 * answer is given from an idle callback; a request closed before that is dropped.
 */
enum answer_kind { ANSWER_ACTION, ANSWER_INPUT, ANSWER_CHOICE, ANSWER_FIELDS, ANSWER_AUTHORIZE };

struct answer {
	enum answer_kind kind;
	PurpleRequestType type;
	guint source;
	GCallback cb;
	gpointer user_data;
	int index;
	gchar *text;
	PurpleRequestFields *fields;
};

static void answer_free(struct answer *a)
{
	if (a->source)
		g_source_remove(a->source);
	g_free(a->text);
	g_free(a);
}

static gboolean answer_now(gpointer data)
{
	struct answer *a = data;
	PurpleRequestType type = a->type;

	a->source = 0;
	switch (a->kind) {
	case ANSWER_ACTION:
	case ANSWER_CHOICE:
		if (a->cb)
			((PurpleRequestActionCb)a->cb)(a->user_data, a->index);
		break;
	case ANSWER_INPUT:
		if (a->cb)
			((PurpleRequestInputCb)a->cb)(a->user_data, a->text);
		break;
	case ANSWER_FIELDS:
		if (a->cb)
			((PurpleRequestFieldsCb)a->cb)(a->user_data, a->fields);
		break;
	case ANSWER_AUTHORIZE:
		/* libpurple frees its request info in this callback: nothing to close. */
		((PurpleAccountRequestAuthorizationCb)a->cb)(a->user_data);
		g_free(a->text);
		g_free(a);
		return FALSE;
	}
	/*
	 * Closing the request makes libpurple call close_request, which frees a (if the
	 * callback closed it already, libpurple no longer knows the handle: no-op).
	 */
	purple_request_close(type, a);
	return FALSE;
}

static struct answer *answer_later(enum answer_kind kind, PurpleRequestType type, GCallback cb,
				   gpointer user_data)
{
	struct answer *a = g_new0(struct answer, 1);

	a->kind = kind;
	a->type = type;
	a->cb = cb;
	a->user_data = user_data;
	a->source = g_idle_add(answer_now, a);
	return a;
}

static void *request_input(const char *title, const char *primary, const char *secondary,
			   const char *default_value, gboolean multiline, gboolean masked,
			   gchar *hint, const char *ok_text, GCallback ok_cb,
			   const char *cancel_text, GCallback cancel_cb, PurpleAccount *acct,
			   const char *who, PurpleConversation *conv, void *user_data)
{
	struct answer *a;

	(void)secondary, (void)multiline, (void)masked, (void)hint, (void)ok_text;
	(void)cancel_text, (void)cancel_cb, (void)acct, (void)who, (void)conv;
	emit("request input %s", title ? title : or_empty(primary));
	a = answer_later(ANSWER_INPUT, PURPLE_REQUEST_INPUT, ok_cb, user_data);
	a->text = g_strdup(or_empty(default_value));
	return a;
}

static void *request_choice(const char *title, const char *primary, const char *secondary,
			    int default_value, const char *ok_text, GCallback ok_cb,
			    const char *cancel_text, GCallback cancel_cb, PurpleAccount *acct,
			    const char *who, PurpleConversation *conv, void *user_data,
			    va_list choices)
{
	struct answer *a;

	(void)secondary, (void)ok_text, (void)cancel_text, (void)cancel_cb, (void)acct;
	(void)who, (void)conv, (void)choices;
	emit("request choice %s", title ? title : or_empty(primary));
	a = answer_later(ANSWER_CHOICE, PURPLE_REQUEST_CHOICE, ok_cb, user_data);
	a->index = default_value;
	return a;
}

static void *request_action(const char *title, const char *primary, const char *secondary,
			    int default_action, PurpleAccount *acct, const char *who,
			    PurpleConversation *conv, void *user_data, size_t action_count,
			    va_list actions)
{
	GCallback chosen = NULL;
	size_t i;
	int index = default_action < 0 ? 0 : default_action;
	int accept = -1;
	GCallback accept_cb = NULL;
	struct answer *a;

	(void)secondary, (void)acct, (void)who, (void)conv;
	/* The actions are (label, callback) pairs. An "Accept" action (the test
	 * server's self-signed certificate) wins over the default. */
	for (i = 0; i < action_count; i++) {
		const char *label = va_arg(actions, const char *);
		GCallback cb = va_arg(actions, GCallback);

		if ((int)i == index)
			chosen = cb;
		if (accept < 0 && label && strstr(label, "Accept")) {
			accept = (int)i;
			accept_cb = cb;
		}
	}
	if (accept >= 0) {
		index = accept;
		chosen = accept_cb;
	}
	emit("request action %s", title ? title : or_empty(primary));
	a = answer_later(ANSWER_ACTION, PURPLE_REQUEST_ACTION, chosen, user_data);
	a->index = index;
	return a;
}

/*
 * The values the next fields dialog is filled with (field id -> value), while the
 * search command opens SIPE's search dialog; NULL otherwise. The dialog opens from
 * within the action, so the command learns at once whether every field was there.
 */
static GHashTable *fill_fields;
static gboolean fields_filled;
static GString *unknown_fields;

static void fill_one(gpointer key, gpointer value, gpointer data)
{
	PurpleRequestField *field = purple_request_fields_get_field(data, key);

	if (field && purple_request_field_get_type(field) == PURPLE_REQUEST_FIELD_STRING) {
		/* As typed into the entry. */
		purple_request_field_string_set_value(field, value);
	} else {
		g_string_append_printf(unknown_fields, " %s", (const char *)key);
	}
}

static void *request_fields(const char *title, const char *primary, const char *secondary,
			    PurpleRequestFields *fields, const char *ok_text, GCallback ok_cb,
			    const char *cancel_text, GCallback cancel_cb, PurpleAccount *acct,
			    const char *who, PurpleConversation *conv, void *user_data)
{
	struct answer *a;

	(void)secondary, (void)ok_text, (void)cancel_text, (void)acct;
	(void)who, (void)conv;
	if (fill_fields && !fields_filled) {
		fields_filled = TRUE;
		g_hash_table_foreach(fill_fields, fill_one, fields);
		/* A field the dialog does not have: the user gives up (Cancel). */
		if (unknown_fields->len)
			ok_cb = cancel_cb;
	}
	emit("request fields %s", title ? title : or_empty(primary));
	a = answer_later(ANSWER_FIELDS, PURPLE_REQUEST_FIELDS, ok_cb, user_data);
	a->fields = fields;
	return a;
}

static void close_request(PurpleRequestType type, void *ui_handle)
{
	(void)type;
	answer_free(ui_handle);
}

static PurpleRequestUiOps request_ops = {
	.request_input = request_input,
	.request_choice = request_choice,
	.request_action = request_action,
	.request_fields = request_fields,
	.close_request = close_request,
};

static void *request_authorize(PurpleAccount *acct, const char *remote_user, const char *id,
			       const char *alias, const char *message, gboolean on_list,
			       PurpleAccountRequestAuthorizationCb authorize_cb,
			       PurpleAccountRequestAuthorizationCb deny_cb, void *user_data)
{
	(void)acct, (void)id, (void)alias, (void)message, (void)on_list, (void)deny_cb;
	emit("request authorize %s", or_empty(remote_user));
	return answer_later(ANSWER_AUTHORIZE, PURPLE_REQUEST_ACTION, (GCallback)authorize_cb,
			    user_data);
}

static void close_account_request(void *ui_handle)
{
	answer_free(ui_handle);
}

static void request_add(PurpleAccount *acct, const char *remote_user, const char *id,
			const char *alias, const char *message)
{
	(void)acct, (void)id, (void)alias, (void)message;
	emit("request add %s", or_empty(remote_user));
}

static PurpleAccountUiOps account_ops = {
	.request_add = request_add,
	.request_authorize = request_authorize,
	.close_account_request = close_account_request,
};

static void *notify_message(PurpleNotifyMsgType type, const char *title, const char *primary,
			    const char *secondary)
{
	(void)type;
	emit("notify %s | %s | %s", or_empty(title), or_empty(primary), or_empty(secondary));
	return NULL;
}

/*
 * Search results: Pidgin shows each in a window of its own, with the buttons the
 * protocol added. The latest one is what search-add acts on. The window is the
 * results themselves (the handle libpurple closes, at the latest when the
 * connection goes).
 */
static PurpleNotifySearchResults *latest_results;
static gpointer latest_results_data;

static void print_rows(PurpleNotifySearchResults *results, const char *text)
{
	guint rows = purple_notify_searchresults_get_rows_count(results);
	guint columns = purple_notify_searchresults_get_columns_count(results);
	GString *line = g_string_new(NULL);
	guint i;

	for (i = 0; i < columns; i++) {
		g_string_append_printf(line, "%s%s", i ? "|" : "",
				       or_empty(purple_notify_searchresults_column_get_title(
					       results, i)));
	}
	emit("results-columns %s", line->str);
	for (i = 0; i < rows; i++) {
		GList *cell;

		g_string_truncate(line, 0);
		for (cell = purple_notify_searchresults_row_get(results, i); cell;
		     cell = cell->next) {
			g_string_append_printf(line, "%s%s", line->len ? "|" : "",
					       or_empty(cell->data));
		}
		/* An empty first cell must not swallow the separator. */
		emit("result %s", line->str);
	}
	emit("results-end %u %s", rows, or_empty(text));
	g_string_free(line, TRUE);
}

static void *notify_searchresults(PurpleConnection *gc, const char *title, const char *primary,
				  const char *secondary, PurpleNotifySearchResults *results,
				  gpointer user_data)
{
	(void)gc, (void)title, (void)primary;
	latest_results = results;
	latest_results_data = user_data;
	print_rows(results, secondary);
	return results;
}

static void notify_searchresults_new_rows(PurpleConnection *gc,
					  PurpleNotifySearchResults *results, void *data)
{
	(void)gc, (void)data;
	/* Pidgin shows the whole list again. */
	print_rows(results, NULL);
}

/* Pidgin's Get Info window: the pairs in order. Values are HTML, shown as given. */
static void *notify_userinfo(PurpleConnection *gc, const char *who,
			     PurpleNotifyUserInfo *user_info)
{
	GList *l;

	(void)gc;
	for (l = purple_notify_user_info_get_entries(user_info); l; l = l->next) {
		PurpleNotifyUserInfoEntry *entry = l->data;

		switch (purple_notify_user_info_entry_get_type(entry)) {
		case PURPLE_NOTIFY_USER_INFO_ENTRY_PAIR:
			emit("info %s=%s", or_empty(purple_notify_user_info_entry_get_label(entry)),
			     or_empty(purple_notify_user_info_entry_get_value(entry)));
			break;
		case PURPLE_NOTIFY_USER_INFO_ENTRY_SECTION_HEADER:
			emit("info-section %s",
			     or_empty(purple_notify_user_info_entry_get_label(entry)));
			break;
		case PURPLE_NOTIFY_USER_INFO_ENTRY_SECTION_BREAK:
			break;
		}
	}
	emit("info-end %s", or_empty(who));
	return NULL;
}

static void close_notify(PurpleNotifyType type, void *ui_handle)
{
	/* Only search results windows are kept open (the others return no handle). */
	if (type != PURPLE_NOTIFY_SEARCHRESULTS)
		return;
	if (ui_handle == latest_results) {
		latest_results = NULL;
		latest_results_data = NULL;
	}
	purple_notify_searchresults_free(ui_handle);
}

static PurpleNotifyUiOps notify_ops = {
	.notify_message = notify_message,
	.notify_searchresults = notify_searchresults,
	.notify_searchresults_new_rows = notify_searchresults_new_rows,
	.notify_userinfo = notify_userinfo,
	.close_notify = close_notify,
};

/*
 * Pidgin's Add Buddy dialog (gtkblist.c pidgin_blist_request_add_buddy), as a user
 * who presses Add without changing it: add_buddy_cb puts a new buddy node into the
 * group (created first if needed) and calls the protocol's add_buddy. Answered
 * later, like every dialog.
 */
struct add_request {
	PurpleAccount *account;
	gchar *who;
	gchar *group;
	gchar *alias;
};

static gboolean add_request_answer(gpointer data)
{
	struct add_request *r = data;
	PurpleGroup *group = NULL;
	PurpleBuddy *buddy = NULL;

	if (purple_account_is_connected(r->account) && *r->who) {
		if (*r->group) {
			group = purple_find_group(r->group);
			if (!group) {
				group = purple_group_new(r->group);
				purple_blist_add_group(group, NULL);
			}
			buddy = purple_find_buddy_in_group(r->account, r->who, group);
		} else if ((buddy = purple_find_buddy(r->account, r->who)) != NULL) {
			group = purple_buddy_get_group(buddy);
		}
		if (!buddy) {
			buddy = purple_buddy_new(r->account, r->who, *r->alias ? r->alias : NULL);
			purple_blist_add_buddy(buddy, NULL, group, NULL);
		}
		purple_account_add_buddy_with_invite(r->account, buddy, NULL);
	}
	g_free(r->who);
	g_free(r->group);
	g_free(r->alias);
	g_free(r);
	return FALSE;
}

static void request_add_buddy(PurpleAccount *acct, const char *username, const char *group,
			      const char *alias)
{
	struct add_request *r = g_new0(struct add_request, 1);

	emit("request add-buddy %s|%s|%s", or_empty(username), or_empty(group), or_empty(alias));
	r->account = acct;
	r->who = g_strdup(or_empty(username));
	r->group = g_strdup(or_empty(group));
	r->alias = g_strdup(or_empty(alias));
	g_idle_add(add_request_answer, r);
}

static PurpleBlistUiOps blist_ops = {
	.request_add_buddy = request_add_buddy,
};

/* ---- events ------------------------------------------------------------- */

static void buddy_line(const char *event, PurpleBuddy *buddy, PurpleStatus *status)
{
	const char *message;

	if (purple_buddy_get_account(buddy) != account)
		return;
	if (!status)
		status = purple_presence_get_active_status(purple_buddy_get_presence(buddy));
	message = status ? purple_status_get_attr_string(status, "message") : NULL;
	emit("%s %s %s %s", event, purple_buddy_get_name(buddy),
	     status ? purple_status_get_id(status) : "unknown", or_empty(message));
}

static void on_buddy_status(PurpleBuddy *buddy, PurpleStatus *old, PurpleStatus *now)
{
	(void)old;
	buddy_line("buddy-status", buddy, now);
}

static void on_buddy_signed_on(PurpleBuddy *buddy)
{
	buddy_line("buddy-signed-on", buddy, NULL);
}

static void on_buddy_signed_off(PurpleBuddy *buddy)
{
	buddy_line("buddy-signed-off", buddy, NULL);
}

static void on_buddy_added(PurpleBuddy *buddy)
{
	if (purple_buddy_get_account(buddy) == account)
		emit("buddy-added %s", purple_buddy_get_name(buddy));
}

static void on_buddy_removed(PurpleBuddy *buddy)
{
	if (purple_buddy_get_account(buddy) == account)
		emit("buddy-removed %s", purple_buddy_get_name(buddy));
}

/*
 * SIPE creates its groups when it processes the contact list from the server, which
 * arrives after signed-on: a buddy added before that is lost (SIPE does not know the
 * group yet, and the list then removes the buddy). Tests wait for this event.
 */
static void on_node_added(PurpleBlistNode *node)
{
	if (PURPLE_BLIST_NODE_IS_GROUP(node))
		emit("group-added %s", purple_group_get_name((PurpleGroup *)node));
}

static void on_node_removed(PurpleBlistNode *node)
{
	if (PURPLE_BLIST_NODE_IS_GROUP(node))
		emit("group-removed %s", purple_group_get_name((PurpleGroup *)node));
}

static void on_node_aliased(PurpleBlistNode *node, const char *old_alias)
{
	PurpleBuddy *buddy = (PurpleBuddy *)node;

	(void)old_alias;
	if (PURPLE_BLIST_NODE_IS_BUDDY(node) && purple_buddy_get_account(buddy) == account)
		emit("buddy-aliased %s %s", purple_buddy_get_name(buddy),
		     or_empty(purple_buddy_get_local_buddy_alias(buddy)));
}

static void on_signed_on(PurpleConnection *gc)
{
	(void)gc;
	emit("signed-on");
}

static void on_signed_off(PurpleConnection *gc)
{
	(void)gc;
	emit("signed-off");
	if (quitting)
		g_main_loop_quit(loop);
}

static void on_connection_error(PurpleConnection *gc, PurpleConnectionError reason,
				const char *text)
{
	(void)gc;
	emit("connection-error %d %s", (int)reason, or_empty(text));
}

/* ---- commands ----------------------------------------------------------- */

/* SIPE's buddy names are sip: URIs. */
static gchar *buddy_uri(const char *who)
{
	gchar *lower = g_ascii_strdown(who, -1);
	gchar *uri;

	if (g_str_has_prefix(lower, "sip:"))
		return lower;
	uri = g_strconcat("sip:", lower, NULL);
	g_free(lower);
	return uri;
}

static void quit(void)
{
	if (quitting)
		return;
	quitting = TRUE;
	if (purple_account_is_disconnected(account)) {
		g_main_loop_quit(loop);
		return;
	}
	/* Disconnecting emits signed-off, which ends the loop. */
	purple_account_set_enabled(account, UI_ID, FALSE);
	if (purple_account_is_disconnected(account))
		g_main_loop_quit(loop);
}

/*
 * The group called NAME, created first if there is none: Pidgin's Add Buddy dialog
 * (and Add Group) do this. libpurple does not tell the protocol about a new group:
 * SIPE creates it on the server (SOAP addGroup) when a buddy is put into it.
 */
static PurpleGroup *group_or_new(const char *name)
{
	PurpleGroup *group = purple_find_group(name);

	if (!group) {
		group = purple_group_new(name);
		purple_blist_add_group(group, NULL);
	}
	return group;
}

/* The buddy's node in the group called GROUP_NAME, if there are both. */
static PurpleBuddy *buddy_in(const char *uri, const char *group_name)
{
	PurpleGroup *group = purple_find_group(group_name);

	return group ? purple_find_buddy_in_group(account, uri, group) : NULL;
}

/*
 * Pidgin's Add Buddy dialog (gtkblist.c add_buddy_cb): a new buddy node in the group,
 * then the protocol's add_buddy. A buddy already in another group gets a second node
 * ("copy"), which SIPE turns into one contact in two groups.
 */
static void add_buddy(const char *verb, const char *uri, const char *group_name)
{
	gboolean known = purple_find_buddy(account, uri) != NULL;
	PurpleBuddy *buddy;

	if (buddy_in(uri, group_name)) {
		emit("error %s is already in %s", uri, group_name);
		return;
	}
	/* Each verb insists on its case, so that a test cannot get the other by mistake. */
	if (g_str_equal(verb, "add") && known) {
		emit("error %s is already a buddy", uri);
		return;
	}
	if (g_str_equal(verb, "copy") && !known) {
		emit("error %s is not a buddy", uri);
		return;
	}
	buddy = purple_buddy_new(account, uri, NULL);
	purple_blist_add_buddy(buddy, NULL, group_or_new(group_name), NULL);
	purple_account_add_buddy_with_invite(account, buddy, NULL);
	emit("ok %s", verb);
}

/* One line per group, and one per buddy node: a buddy in two groups has two. */
static void print_groups(void)
{
	PurpleBlistNode *gnode, *cnode, *bnode;

	for (gnode = purple_blist_get_root(); gnode;
	     gnode = purple_blist_node_get_sibling_next(gnode)) {
		const char *group_name;

		if (!PURPLE_BLIST_NODE_IS_GROUP(gnode))
			continue;
		group_name = purple_group_get_name((PurpleGroup *)gnode);
		emit("group %s", group_name);
		for (cnode = purple_blist_node_get_first_child(gnode); cnode;
		     cnode = purple_blist_node_get_sibling_next(cnode)) {
			if (!PURPLE_BLIST_NODE_IS_CONTACT(cnode))
				continue;
			for (bnode = purple_blist_node_get_first_child(cnode); bnode;
			     bnode = purple_blist_node_get_sibling_next(bnode)) {
				PurpleBuddy *buddy = (PurpleBuddy *)bnode;

				if (!PURPLE_BLIST_NODE_IS_BUDDY(bnode) ||
				    purple_buddy_get_account(buddy) != account)
					continue;
				emit("member %s|%s|%s", purple_buddy_get_name(buddy), group_name,
				     or_empty(purple_buddy_get_local_buddy_alias(buddy)));
			}
		}
	}
	emit("ok groups");
}

/* Pidgin's Remove Group (gtkdialogs.c): each buddy in it, then the group. */
static void remove_group(PurpleGroup *group)
{
	PurpleBlistNode *cnode = purple_blist_node_get_first_child((PurpleBlistNode *)group);

	while (cnode) {
		PurpleBlistNode *bnode = purple_blist_node_get_first_child(cnode);

		cnode = purple_blist_node_get_sibling_next(cnode);
		while (bnode) {
			PurpleBlistNode *next = purple_blist_node_get_sibling_next(bnode);

			if (PURPLE_BLIST_NODE_IS_BUDDY(bnode)) {
				purple_account_remove_buddy(account, (PurpleBuddy *)bnode, group);
				purple_blist_remove_buddy((PurpleBuddy *)bnode);
			}
			bnode = next;
		}
	}
	purple_blist_remove_group(group);
}

/*
 * Pidgin's Accounts menu: the protocol's actions for this connection, each with its
 * plugin and connection set (gtkblist.c); choosing one calls its callback.
 */
static gboolean run_account_action(const char *label)
{
	PurpleConnection *gc = purple_account_get_connection(account);
	PurplePlugin *prpl = purple_connection_get_prpl(gc);
	GList *actions = PURPLE_PLUGIN_ACTIONS(prpl, gc);
	GList *l;
	gboolean found = FALSE;

	for (l = actions; l; l = l->next) {
		PurplePluginAction *action = l->data;

		if (!action)
			continue; /* a separator */
		action->plugin = prpl;
		action->context = gc;
		if (!found && g_str_equal(action->label, label) && action->callback) {
			found = TRUE;
			action->callback(action);
		}
	}
	for (l = actions; l; l = l->next) {
		if (l->data)
			purple_plugin_action_free(l->data);
	}
	g_list_free(actions);
	return found;
}

/* search <field>=<value> ...: each value runs to the next word with a '='. */
static void search(const char *query)
{
	gchar **words = g_strsplit(query, " ", -1);
	GHashTable *fields = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	gchar *key = NULL;
	GString *value = g_string_new(NULL);
	gchar **w;

	for (w = words; *w; w++) {
		const char *eq = strchr(*w, '=');

		if (eq && eq != *w) {
			if (key)
				g_hash_table_insert(fields, key, g_strdup(value->str));
			key = g_strndup(*w, eq - *w);
			g_string_assign(value, eq + 1);
		} else if (key) {
			g_string_append_printf(value, " %s", *w);
		} else if (**w) {
			emit("error search: %s is not <field>=<value>", *w);
			goto out;
		}
	}
	if (key) {
		g_hash_table_insert(fields, key, g_strdup(value->str));
		key = NULL;
	}
	fill_fields = fields;
	fields_filled = FALSE;
	unknown_fields = g_string_new(NULL);
	if (!run_account_action("Contact search..."))
		emit("error the protocol has no Contact search... action");
	else if (!fields_filled)
		emit("error Contact search... opened no dialog");
	else if (unknown_fields->len)
		emit("error the search dialog has no field%s", unknown_fields->str);
	else
		emit("ok search");
	g_string_free(unknown_fields, TRUE);
	unknown_fields = NULL;
	fill_fields = NULL;
out:
	g_free(key);
	g_hash_table_destroy(fields);
	g_string_free(value, TRUE);
	g_strfreev(words);
}

/* Pressing a button of the latest search results with one row selected. */
static void search_results_button(PurpleNotifySearchButtonType type, const char *row_text)
{
	gchar *end = NULL;
	long n = strtol(row_text, &end, 10);
	GList *row, *l;

	if (!latest_results) {
		emit("error no search results are shown");
		return;
	}
	if (!end || *end || n < 0 ||
	    (guint)n >= purple_notify_searchresults_get_rows_count(latest_results)) {
		emit("error no row %s in the search results", row_text);
		return;
	}
	row = purple_notify_searchresults_row_get(latest_results, (guint)n);
	for (l = latest_results->buttons; l; l = l->next) {
		PurpleNotifySearchButton *button = l->data;

		if (button->type == type && button->callback) {
			/* Pidgin passes a copy of the selected row's cells. */
			GList *copy = NULL;
			GList *cell;

			for (cell = row; cell; cell = cell->next)
				copy = g_list_append(copy, g_strdup(cell->data));
			button->callback(purple_account_get_connection(account), copy,
					 latest_results_data);
			g_list_free_full(copy, g_free);
			emit("ok search-add");
			return;
		}
	}
	emit("error the search results have no such button");
}

static void command(gchar *line)
{
	gchar **parts = g_strsplit(g_strstrip(line), " ", 2);
	const char *verb = parts[0] ? parts[0] : "";
	/* Everything after the verb, and that split once more: <user> <the rest>. */
	const char *rest = parts[0] ? parts[1] : NULL;
	gchar **words = g_strsplit(rest ? rest : "", " ", 2);
	const char *arg = words[0] && *words[0] ? words[0] : NULL;
	const char *more = arg ? words[1] : NULL;
	gchar *uri = arg ? buddy_uri(arg) : NULL;

	if (!*verb) {
		/* blank line */
	} else if (g_str_equal(verb, "quit")) {
		emit("ok quit");
		quit();
	} else if (g_str_equal(verb, "list")) {
		GSList *buddies = purple_find_buddies(account, NULL);
		GSList *l;

		for (l = buddies; l; l = l->next)
			buddy_line("buddy-status", l->data, NULL);
		g_slist_free(buddies);
		emit("ok list");
	} else if (g_str_equal(verb, "groups")) {
		print_groups();
	} else if (!arg) {
		emit("error %s needs an argument", verb);
	} else if (!purple_account_is_connected(account)) {
		emit("error not signed in");
	} else if (g_str_equal(verb, "status")) {
		if (!purple_account_get_status(account, arg)) {
			emit("error unknown status %s", arg);
		} else {
			if (more)
				purple_account_set_status(account, arg, TRUE, "message", more, NULL);
			else
				purple_account_set_status(account, arg, TRUE, NULL);
			emit("ok status");
		}
	} else if (g_str_equal(verb, "add")) {
		add_buddy(verb, uri, more ? more : GROUP);
	} else if (g_str_equal(verb, "copy")) {
		if (!more)
			emit("error copy needs a group");
		else
			add_buddy(verb, uri, more);
	} else if (g_str_equal(verb, "move")) {
		PurpleBuddy *buddy = purple_find_buddy(account, uri);

		if (!more) {
			emit("error move needs a group");
		} else if (!buddy) {
			emit("error %s is not a buddy", uri);
		} else if (buddy_in(uri, more)) {
			emit("error %s is already in %s", uri, more);
		} else {
			/* Dropping a buddy on a group (gtkblist.c): libpurple calls the
			 * protocol's group_buddy with the old and new group names. */
			purple_blist_add_buddy(buddy, NULL, group_or_new(more), NULL);
			emit("ok move");
		}
	} else if (g_str_equal(verb, "remove")) {
		PurpleBuddy *buddy = more ? buddy_in(uri, more) : purple_find_buddy(account, uri);

		if (!buddy) {
			emit("error %s is not a buddy in %s", uri, more ? more : "any group");
		} else {
			/* Pidgin's Remove (gtkdialogs.c): this buddy node, from its group. */
			purple_account_remove_buddy(account, buddy, purple_buddy_get_group(buddy));
			purple_blist_remove_buddy(buddy);
			emit("ok remove");
		}
	} else if (g_str_equal(verb, "rename-group")) {
		gchar **names = g_strsplit(rest, "|", 2);
		PurpleGroup *group = purple_find_group(names[0]);

		if (!names[1] || !*names[1]) {
			emit("error rename-group needs <old>|<new>");
		} else if (!group) {
			emit("error no group %s", names[0]);
		} else {
			/* Editing the group's name in the list (gtkblist.c). */
			purple_blist_rename_group(group, names[1]);
			emit("ok rename-group");
		}
		g_strfreev(names);
	} else if (g_str_equal(verb, "remove-group")) {
		PurpleGroup *group = purple_find_group(rest);

		if (!group) {
			emit("error no group %s", rest);
		} else {
			remove_group(group);
			emit("ok remove-group");
		}
	} else if (g_str_equal(verb, "alias")) {
		PurpleBuddy *buddy = purple_find_buddy(account, uri);

		if (!buddy) {
			emit("error %s is not a buddy", uri);
		} else {
			/* Editing the buddy's alias in the list (gtkblist.c). */
			purple_blist_alias_buddy(buddy, more);
			serv_alias_buddy(buddy);
			emit("ok alias");
		}
	} else if (g_str_equal(verb, "search")) {
		search(rest);
	} else if (g_str_equal(verb, "search-add")) {
		search_results_button(PURPLE_NOTIFY_BUTTON_ADD, arg);
	} else if (g_str_equal(verb, "info")) {
		/* Get Info in the buddy list (gtkblist.c pidgin_retrieve_user_info asks
		 * the protocol after showing "Retrieving..."). */
		serv_get_info(purple_account_get_connection(account), uri);
		emit("ok info");
	} else if (g_str_equal(verb, "block")) {
		/* Not local only: libpurple calls the protocol's add_deny. */
		if (purple_privacy_deny_add(account, uri, FALSE))
			emit("ok block");
		else
			emit("error %s is already blocked", uri);
	} else if (g_str_equal(verb, "unblock")) {
		if (purple_privacy_deny_remove(account, uri, FALSE))
			emit("ok unblock");
		else
			emit("error %s is not blocked", uri);
	} else {
		emit("error unknown command %s", verb);
	}
	g_free(uri);
	g_strfreev(words);
	g_strfreev(parts);
}

static gboolean stdin_ready(GIOChannel *channel, GIOCondition cond, gpointer data)
{
	gchar *line = NULL;
	GIOStatus st;

	(void)cond, (void)data;
	st = g_io_channel_read_line(channel, &line, NULL, NULL, NULL);
	if (st == G_IO_STATUS_AGAIN)
		return TRUE;
	if (st != G_IO_STATUS_NORMAL) {
		/* End of input: the test is gone. */
		quit();
		return FALSE;
	}
	command(line);
	g_free(line);
	return TRUE;
}

/* ---- main --------------------------------------------------------------- */

static PurpleCoreUiOps core_ops;

int main(int argc, char **argv)
{
	static int handle;
	GIOChannel *in;
	PurpleSavedStatus *saved;

	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: %s USER SERVER USERDIR [PASSWORD]\n", argv[0]);
		return 2;
	}
	debug_on = g_getenv("SIPE_HARNESS_DEBUG") != NULL;
	/* The pid tells two clients of one user apart; the test prints it too. */
	debug_prefix = g_strdup_printf("%s/%d", argv[1], (int)getpid());
	loop = g_main_loop_new(NULL, FALSE);

	purple_util_set_user_dir(argv[3]);
	/* Debug output goes only through debug_ops (never libpurple's own stdout). */
	purple_debug_set_enabled(FALSE);
	purple_debug_set_verbose(debug_on);
	purple_debug_set_unsafe(debug_on);
	purple_debug_set_ui_ops(&debug_ops);
	purple_core_set_ui_ops(&core_ops);
	purple_eventloop_set_ui_ops(&loop_ops);
	purple_request_set_ui_ops(&request_ops);
	purple_accounts_set_ui_ops(&account_ops);
	purple_notify_set_ui_ops(&notify_ops);
	if (!purple_core_init(UI_ID)) {
		emit("connection-error -1 libpurple did not initialise");
		return 1;
	}
	purple_blist_set_ui_ops(&blist_ops);
	purple_set_blist(purple_blist_new());
	purple_blist_load();
	purple_prefs_load();
	/* Idleness must not change the status during a test. */
	purple_prefs_set_string("/purple/away/idle_reporting", "none");
	purple_prefs_set_bool("/purple/away/away_when_idle", FALSE);

	if (!purple_find_prpl("prpl-sipe")) {
		emit("connection-error -1 the prpl-sipe plugin is not installed");
		return 1;
	}

	purple_signal_connect(purple_connections_get_handle(), "signed-on", &handle,
			      PURPLE_CALLBACK(on_signed_on), NULL);
	purple_signal_connect(purple_connections_get_handle(), "signed-off", &handle,
			      PURPLE_CALLBACK(on_signed_off), NULL);
	purple_signal_connect(purple_connections_get_handle(), "connection-error", &handle,
			      PURPLE_CALLBACK(on_connection_error), NULL);
	purple_signal_connect(purple_blist_get_handle(), "buddy-status-changed", &handle,
			      PURPLE_CALLBACK(on_buddy_status), NULL);
	purple_signal_connect(purple_blist_get_handle(), "buddy-signed-on", &handle,
			      PURPLE_CALLBACK(on_buddy_signed_on), NULL);
	purple_signal_connect(purple_blist_get_handle(), "buddy-signed-off", &handle,
			      PURPLE_CALLBACK(on_buddy_signed_off), NULL);
	purple_signal_connect(purple_blist_get_handle(), "buddy-added", &handle,
			      PURPLE_CALLBACK(on_buddy_added), NULL);
	purple_signal_connect(purple_blist_get_handle(), "buddy-removed", &handle,
			      PURPLE_CALLBACK(on_buddy_removed), NULL);
	purple_signal_connect(purple_blist_get_handle(), "blist-node-added", &handle,
			      PURPLE_CALLBACK(on_node_added), NULL);
	purple_signal_connect(purple_blist_get_handle(), "blist-node-removed", &handle,
			      PURPLE_CALLBACK(on_node_removed), NULL);
	purple_signal_connect(purple_blist_get_handle(), "blist-node-aliased", &handle,
			      PURPLE_CALLBACK(on_node_aliased), NULL);

	account = purple_account_new(argv[1], "prpl-sipe");
	purple_account_set_password(account, argc == 5 ? argv[4] : "secret");
	purple_account_set_string(account, "server", argv[2]);
	/* SIPE_TRANSPORT=tls selects TLS; TCP otherwise. */
	purple_account_set_string(account, "transport",
				  getenv("SIPE_TRANSPORT") ? getenv("SIPE_TRANSPORT") : "tcp");
	purple_account_set_string(account, "authentication", "ntlm");
	purple_account_set_bool(account, "sso", FALSE);
	/* No calendar (EWS) autodiscovery or HTTP requests. */
	purple_account_set_bool(account, "dont-publish", TRUE);
	purple_account_set_string(account, "email_url", "");
	purple_accounts_add(account);

	in = g_io_channel_unix_new(0);
	g_io_add_watch(in, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_ready, NULL);

	purple_account_set_enabled(account, UI_ID, TRUE);
	saved = purple_savedstatus_new(NULL, PURPLE_STATUS_AVAILABLE);
	purple_savedstatus_activate(saved);

	g_main_loop_run(loop);

	g_io_channel_unref(in);
	purple_core_quit();
	return 0;
}
