CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`name` text NOT NULL,
	`secret_hash` text NOT NULL,
	`scopes` text NOT NULL,
	`expires_at` integer,
	`revoked_at` integer,
	`last_used_at` integer,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `api_tokens_tenant` ON `api_tokens` (`tenant_id`);--> statement-breakpoint
CREATE TABLE `blobs` (
	`digest` text PRIMARY KEY NOT NULL,
	`size` integer NOT NULL,
	`data` blob NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE TABLE `eid_blocks` (
	`start` integer PRIMARY KEY NOT NULL,
	`end` integer NOT NULL,
	`owner` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE TABLE `enclaves` (
	`eid` integer PRIMARY KEY NOT NULL,
	`cid` text NOT NULL,
	`stage` text NOT NULL,
	`backend` text NOT NULL,
	`measurement_alg` text NOT NULL,
	`measurement` text NOT NULL,
	`native_evidence` blob,
	`native_format` text,
	`chain_head` text,
	`last_seq` integer DEFAULT 0 NOT NULL,
	`final_checkpoint` blob,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`destroyed_at` integer
);
--> statement-breakpoint
CREATE INDEX `enclaves_cid` ON `enclaves` (`cid`);--> statement-breakpoint
CREATE TABLE `function_versions` (
	`id` text PRIMARY KEY NOT NULL,
	`function_id` text NOT NULL,
	`version` text NOT NULL,
	`bundle_digest` text NOT NULL,
	`version_digest` text NOT NULL,
	`manifest` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`function_id`) REFERENCES `functions`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `function_versions_fn_version` ON `function_versions` (`function_id`,`version`);--> statement-breakpoint
CREATE TABLE `functions` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`name` text NOT NULL,
	`active_version_id` text,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`updated_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `functions_name` ON `functions` (`name`);--> statement-breakpoint
CREATE INDEX `functions_tenant` ON `functions` (`tenant_id`);--> statement-breakpoint
CREATE TABLE `instances` (
	`cid` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`function_id` text NOT NULL,
	`version_id` text NOT NULL,
	`status` text NOT NULL,
	`pid` integer,
	`host_id` text NOT NULL,
	`bundle_path` text NOT NULL,
	`annotations` text DEFAULT '{}' NOT NULL,
	`exit_status` integer,
	`stop_reason` text,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`started_at` integer,
	`stopped_at` integer,
	`last_used_at` integer,
	FOREIGN KEY (`version_id`) REFERENCES `function_versions`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `instances_function` ON `instances` (`function_id`,`status`);--> statement-breakpoint
CREATE INDEX `instances_host` ON `instances` (`host_id`,`status`);--> statement-breakpoint
CREATE TABLE `invocations` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`function_id` text NOT NULL,
	`version_id` text NOT NULL,
	`cid` text,
	`trigger` text NOT NULL,
	`start` text,
	`status` text NOT NULL,
	`http_status` integer,
	`error` text,
	`console` text,
	`timings` text,
	`started_at` integer NOT NULL,
	`finished_at` integer
);
--> statement-breakpoint
CREATE INDEX `invocations_function` ON `invocations` (`function_id`,`started_at`);--> statement-breakpoint
CREATE TABLE `stage_executions` (
	`id` text PRIMARY KEY NOT NULL,
	`invocation_id` text NOT NULL,
	`cid` text NOT NULL,
	`eid` integer NOT NULL,
	`seq` integer NOT NULL,
	`stage` text NOT NULL,
	`backend` text NOT NULL,
	`measurement` text NOT NULL,
	`request_digest` text NOT NULL,
	`request_inline` blob,
	`request_blob` text,
	`response_digest` text,
	`response_inline` blob,
	`response_blob` text,
	`log` blob,
	`log_digest` text,
	`metadata` text NOT NULL,
	`exit_reason` text NOT NULL,
	`exit_code` integer,
	`evidence` blob,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `stage_executions_invocation` ON `stage_executions` (`invocation_id`);--> statement-breakpoint
CREATE UNIQUE INDEX `stage_executions_eid_seq` ON `stage_executions` (`eid`,`seq`);--> statement-breakpoint
CREATE TABLE `stages` (
	`version_id` text NOT NULL,
	`name` text NOT NULL,
	`backend` text NOT NULL,
	`mode` text NOT NULL,
	`image_digest` text NOT NULL,
	`measurement_alg` text,
	`measurement` text,
	`measurement_note` text,
	`config` text NOT NULL,
	PRIMARY KEY(`version_id`, `name`),
	FOREIGN KEY (`version_id`) REFERENCES `function_versions`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `tenants` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `tenants_name_unique` ON `tenants` (`name`);--> statement-breakpoint
CREATE TABLE `version_files` (
	`version_id` text NOT NULL,
	`path` text NOT NULL,
	`mode` integer NOT NULL,
	`size` integer NOT NULL,
	`blob_digest` text NOT NULL,
	PRIMARY KEY(`version_id`, `path`),
	FOREIGN KEY (`version_id`) REFERENCES `function_versions`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`blob_digest`) REFERENCES `blobs`(`digest`) ON UPDATE no action ON DELETE no action
);
