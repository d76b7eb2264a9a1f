-- What `create_all` made for the inventory database (sqlite) at 8857ef3, before migrations.
-- Recorded from that commit's models; never re-recorded.

CREATE TABLE inventory_product (
	sku VARCHAR(64) NOT NULL, 
	name VARCHAR NOT NULL, 
	price_cents INTEGER NOT NULL, 
	stock INTEGER NOT NULL, 
	PRIMARY KEY (sku)
);

CREATE TABLE inventory_reservation (
	id VARCHAR NOT NULL, 
	reservation_key VARCHAR(300) NOT NULL, 
	order_id VARCHAR(200) NOT NULL, 
	lines_json VARCHAR NOT NULL, 
	total_cents INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	released_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (reservation_key)
);

CREATE INDEX ix_inventory_reservation_order_id ON inventory_reservation (order_id);

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
