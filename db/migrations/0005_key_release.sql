CREATE TABLE `key_releases` (
	`id` text PRIMARY KEY NOT NULL,
	`secret_id` text NOT NULL,
	`cid` text NOT NULL,
	`eid` integer NOT NULL,
	`stage` text NOT NULL,
	`measurement` text NOT NULL,
	`released` integer NOT NULL,
	`reason` text NOT NULL,
	`native_evidence` blob NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `key_releases_secret` ON `key_releases` (`secret_id`);--> statement-breakpoint
CREATE TABLE `sealed_secrets` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`function_id` text NOT NULL,
	`name` text NOT NULL,
	`stage` text NOT NULL,
	`policy` text NOT NULL,
	`envelope` blob NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `sealed_secrets_fn_name` ON `sealed_secrets` (`function_id`,`name`);