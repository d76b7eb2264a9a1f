-- What `create_all` made for the notifications database (sqlite) at 8857ef3, before migrations.
-- Recorded from that commit's models; never re-recorded.

CREATE TABLE notifications_notification (
	id VARCHAR NOT NULL, 
	notification_key VARCHAR(300) NOT NULL, 
	order_id VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200) NOT NULL, 
	body VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (notification_key)
);

CREATE INDEX ix_notifications_notification_order_id ON notifications_notification (order_id);

CREATE TABLE idempotency_record (
	"key" VARCHAR(300) NOT NULL, 
	operation VARCHAR(64) NOT NULL, 
	result_json VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY ("key")
);

CREATE TABLE injected_fault (
	service VARCHAR(64) NOT NULL, 
	error_ratio FLOAT NOT NULL, 
	latency_ms INTEGER NOT NULL, 
	activity VARCHAR(64), 
	non_retryable BOOLEAN NOT NULL, 
	injected_errors INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (service)
);
